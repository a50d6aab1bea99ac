// Error checks for the native core.
//
// Two kinds are kept apart (as in faiss):
//   NDT_CHECK_ARG  — the caller passed something invalid: throws std::invalid_argument, which the
//                    binding maps to Python's ValueError.
//   NDT_ASSERT     — an internal invariant broke: throws std::logic_error (RuntimeError in Python).
// A user error names the problem only: its message reaches the user as a ValueError, where the
// build machine's source path would be noise. An internal error carries file:line, so a report
// points at the exact invariant that broke.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace ndt::detail {

[[noreturn]] inline void throw_invalid_argument(const std::string& msg) { throw std::invalid_argument(msg); }

[[noreturn]] inline void throw_internal(const char* file, int line, const char* cond,
                                        const std::string& msg) {
  std::ostringstream os;
  os << "ndt internal error: " << msg << " (" << cond << ") [" << file << ":" << line << "]";
  throw std::logic_error(os.str());
}

}  // namespace ndt::detail

#define NDT_CHECK_ARG(cond, msg)                                                        \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      std::ostringstream ndt_check_os_;                                                 \
      ndt_check_os_ << msg;                                                             \
      ::ndt::detail::throw_invalid_argument(ndt_check_os_.str());                      \
    }                                                                                   \
  } while (0)

#define NDT_ASSERT(cond, msg)                                                           \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      std::ostringstream ndt_check_os_;                                                 \
      ndt_check_os_ << msg;                                                             \
      ::ndt::detail::throw_internal(__FILE__, __LINE__, #cond, ndt_check_os_.str());    \
    }                                                                                   \
  } while (0)
