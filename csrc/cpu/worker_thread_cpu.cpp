#include "ndt/worker_thread.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

#ifdef __linux__
#include <pthread.h>
#endif

namespace ndt {

WorkerThread::~WorkerThread() { stop(); }

void WorkerThread::start() {
  if (thread_.joinable()) return;
  std::lock_guard<std::mutex> lock(mutex_);
  stopping_ = false;
  thread_ = std::thread([this] { run(); });  // (std::system_error escapes: no thread)
}

void WorkerThread::submit(std::function<void()> job) {
  if (!thread_.joinable()) throw std::logic_error("WorkerThread::submit: the thread is not started");
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (in_flight_) throw std::logic_error("WorkerThread::submit: a job is in flight (take() it first)");
    job_ = std::move(job);
    error_ = nullptr;
    in_flight_ = true;
    done_ = false;
  }
  job_ready_.notify_one();
}

bool WorkerThread::in_flight() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return in_flight_;
}

bool WorkerThread::done() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return in_flight_ && done_;
}

std::exception_ptr WorkerThread::take() {
  std::unique_lock<std::mutex> lock(mutex_);
  if (!in_flight_) return nullptr;
  job_done_.wait(lock, [this] { return done_; });
  in_flight_ = false;
  return std::exchange(error_, nullptr);
}

void WorkerThread::stop() {
  take();
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  job_ready_.notify_one();
  thread_.join();
}

void WorkerThread::run() {
#ifdef __linux__
  const std::string name(name_, std::min<size_t>(std::strlen(name_), 15));  // (the kernel's limit)
  pthread_setname_np(pthread_self(), name.c_str());
#endif
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    job_ready_.wait(lock, [this] { return stopping_ || (in_flight_ && !done_); });
    if (stopping_) return;
    std::function<void()> job = std::move(job_);
    lock.unlock();
    std::exception_ptr error;
    try {
      job();
    } catch (...) {
      error = std::current_exception();
    }
    job = nullptr;  // (whatever it captured is released on this thread, before done)
    lock.lock();
    error_ = error;
    done_ = true;
    job_done_.notify_all();
  }
}

}  // namespace ndt
