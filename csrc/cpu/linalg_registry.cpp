#include "ndt/linalg_registry.h"

namespace ndt {
namespace {
LinalgRoutines g_routines;
}

void register_linalg(const LinalgRoutines& routines) { g_routines = routines; }

const LinalgRoutines& linalg() { return g_routines; }

}  // namespace ndt
