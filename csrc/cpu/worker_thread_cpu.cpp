#include "ndt/worker_thread.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

#include <unistd.h>

#ifdef __linux__
#include <pthread.h>
#endif

namespace ndt {

struct WorkerThread::State {
  std::mutex mutex;
  std::condition_variable job_ready, job_done;
  std::function<void()> job;
  std::exception_ptr error;
  bool in_flight = false;  // submitted, not taken
  bool done = false;       // the job in flight has ended
  bool stopping = false;
  std::string name;
  std::thread thread;
};

WorkerThread::WorkerThread(const char* name) : name_(name) {}

WorkerThread::~WorkerThread() { stop(); }

bool WorkerThread::forked() const { return state_ != nullptr && static_cast<long>(getpid()) != owner_; }

void WorkerThread::abandon_after_fork() {
  // The std::thread in the state is "joinable" here but names no thread of this process:
  // destroying it would call std::terminate, joining it would fail. So neither happens.
  (void)state_.release();
}

void WorkerThread::start() {
  if (forked()) abandon_after_fork();
  started_ = true;
  if (state_) return;
  auto state = std::make_unique<State>();
  state->name.assign(name_, std::min<size_t>(std::strlen(name_), 15));  // (Linux keeps 15 characters)
  State* raw = state.get();
  state->thread = std::thread([raw] { run(raw); });  // (std::system_error escapes: no thread)
  state_ = std::move(state);
  owner_ = static_cast<long>(getpid());
}

void WorkerThread::submit(std::function<void()> job) {
  if (forked() || (started_ && !state_)) start();  // a forked child that goes on gets a thread of its own
  if (!state_) throw std::logic_error("WorkerThread::submit: the thread is not started");
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    if (state_->in_flight) throw std::logic_error("WorkerThread::submit: a job is in flight (take() it first)");
    state_->job = std::move(job);
    state_->error = nullptr;
    state_->in_flight = true;
    state_->done = false;
  }
  state_->job_ready.notify_one();
}

bool WorkerThread::in_flight() const {
  if (!state_ || forked()) return false;
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->in_flight;
}

bool WorkerThread::done() const {
  if (!state_ || forked()) return false;
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->in_flight && state_->done;
}

std::exception_ptr WorkerThread::take() {
  if (forked()) abandon_after_fork();
  if (!state_) return nullptr;
  std::unique_lock<std::mutex> lock(state_->mutex);
  if (!state_->in_flight) return nullptr;
  state_->job_done.wait(lock, [this] { return state_->done; });
  state_->in_flight = false;
  return std::exchange(state_->error, nullptr);
}

void WorkerThread::stop() {
  take();  // (after a fork: forgets the parent's thread)
  if (!state_) {
    started_ = false;
    return;
  }
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->stopping = true;
  }
  state_->job_ready.notify_one();
  state_->thread.join();
  state_.reset();
  started_ = false;
}

void WorkerThread::run(State* state) {
#ifdef __linux__
  pthread_setname_np(pthread_self(), state->name.c_str());
#endif
  std::unique_lock<std::mutex> lock(state->mutex);
  for (;;) {
    state->job_ready.wait(lock, [state] { return state->stopping || (state->in_flight && !state->done); });
    if (state->stopping) return;
    std::function<void()> job = std::move(state->job);
    lock.unlock();
    std::exception_ptr error;
    try {
      job();
    } catch (...) {
      error = std::current_exception();
    }
    job = nullptr;  // (whatever it captured is released on this thread, before done)
    lock.lock();
    state->error = error;
    state->done = true;
    state->job_done.notify_all();
  }
}

}  // namespace ndt
