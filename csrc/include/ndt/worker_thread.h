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
#pragma once

#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

namespace ndt {

class WorkerThread {
 public:
  /// `name`: the thread's name as tools show it (Linux: at most 15 characters are kept).
  explicit WorkerThread(const char* name) : name_(name) {}
  /// Waits for the job in flight (if any) and stops the thread.
  ~WorkerThread();
  WorkerThread(const WorkerThread&) = delete;
  WorkerThread& operator=(const WorkerThread&) = delete;

  /// Starts the thread (once; later calls do nothing). std::system_error when the system
  /// cannot make one: the caller runs its jobs itself.
  void start();
  /// Runs `job` on the thread. std::logic_error if the thread is not started or a job is in
  /// flight (take() its result first).
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
  void run();

  const char* name_;
  std::thread thread_;
  mutable std::mutex mutex_;
  std::condition_variable job_ready_, job_done_;
  std::function<void()> job_;
  std::exception_ptr error_;
  bool in_flight_ = false;  // submitted, not taken
  bool done_ = false;       // the job in flight has ended
  bool stopping_ = false;
};

}  // namespace ndt
