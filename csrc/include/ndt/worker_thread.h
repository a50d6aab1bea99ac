// One background thread that runs one job at a time: the tracker's background_finish, where a
// sample's Grams and its finish (sample_finish.h) run beside the training thread.
//
// Why native and not a Python thread: a Python worker needs the GIL to start each job and to
// end it, and on a training thread that is running Python (a framework's loop) every such
// hand-over waits for the GIL twice — measured ~0.25 ms per sample on a small model, about what
// the finish itself costs. Here the job is plain C++ prepared by the caller (every Python object
// already converted): submit() and take() are a mutex and a condition variable, never the GIL.
//
// Thread safety: submit(), done(), take() and stop() are for one owning thread (the training
// thread); the job runs on the worker thread. Nothing in flight at submit(): take() first.
//
// fork(): the child has a copy of this object but not the thread (nor, maybe, a usable mutex:
// the thread may have held it at the fork). There the worker counts as never started: nothing is
// in flight (the parent finishes its own job), stop() returns at once, and the first start() or
// submit() makes a thread of the child's own. The parent's thread and state are left alone in the
// child (leaked: they cannot be joined or destroyed there).
#pragma once

#include <exception>
#include <functional>
#include <memory>

namespace ndt {

class WorkerThread {
 public:
  /// `name`: the thread's name as tools show it (Linux: at most 15 characters are kept).
  explicit WorkerThread(const char* name);
  /// Waits for the job in flight (if any) and stops the thread.
  ~WorkerThread();
  WorkerThread(const WorkerThread&) = delete;
  WorkerThread& operator=(const WorkerThread&) = delete;

  /// Starts the thread (once; later calls do nothing). std::system_error when the system
  /// cannot make one: the caller runs its jobs itself.
  void start();
  /// Runs `job` on the thread. std::logic_error if start() was never called or a job is in
  /// flight (take() its result first). In a fork()ed child, a thread of its own is made first.
  void submit(std::function<void()> job);
  /// A job was submitted and its result not taken yet.
  bool in_flight() const;
  /// The job in flight has ended (false when none is in flight).
  bool done() const;
  /// Waits for the job in flight to end and clears it; returns what it threw (nullptr: it
  /// returned, or nothing was in flight).
  std::exception_ptr take();
  /// take(), then ends the thread (start() may make a new one).
  void stop();

 private:
  struct State;  // the thread, its lock and the job slot (worker_thread_cpu.cpp)
  static void run(State* state);
  /// This object was copied into a fork()ed child: its thread is the parent's.
  bool forked() const;
  /// In a forked child: forget the parent's thread and state (leaked, never touched).
  void abandon_after_fork();

  const char* name_;
  std::unique_ptr<State> state_;  // null until start(), and after stop()
  long owner_ = 0;                // the process that made the thread
  bool started_ = false;          // start() was called and stop() was not since
};

}  // namespace ndt
