#include "ndt/record_ring.h"

#include <algorithm>
#include <cstring>

#include "ndt/check.h"

namespace ndt {

RecordRing::RecordRing(int64_t capacity, int64_t width) : capacity_(capacity), width_(width) {
  NDT_CHECK_ARG(capacity >= 1, "ring capacity must be >= 1, got " << capacity);
  NDT_CHECK_ARG(width >= 1, "record width must be >= 1, got " << width);
  NDT_CHECK_ARG(capacity <= (int64_t{1} << 40) / width, "ring of " << capacity << " x " << width
                                                                    << " doubles is too large");
  slots_.assign(static_cast<size_t>(capacity * width), 0.0);
}

bool RecordRing::push(const double* rows, int64_t count) {
  NDT_CHECK_ARG(count >= 0, "record count must be >= 0, got " << count);
  std::lock_guard<std::mutex> lock(mutex_);
  if (count > capacity_ - size_) return false;
  int64_t tail = (head_ + size_) % capacity_;
  int64_t done = 0;
  while (done < count) {  // at most two contiguous pieces (before and after the wrap)
    const int64_t piece = std::min(count - done, capacity_ - tail);
    std::memcpy(slots_.data() + tail * width_, rows + done * width_,
                static_cast<size_t>(piece * width_) * sizeof(double));
    done += piece;
    tail = (tail + piece) % capacity_;
  }
  size_ += count;
  total_pushed_ += count;
  return true;
}

int64_t RecordRing::copy_out(double* out, int64_t count) const {
  int64_t from = head_;
  int64_t done = 0;
  while (done < count) {
    const int64_t piece = std::min(count - done, capacity_ - from);
    std::memcpy(out + done * width_, slots_.data() + from * width_,
                static_cast<size_t>(piece * width_) * sizeof(double));
    done += piece;
    from = (from + piece) % capacity_;
  }
  return count;
}

int64_t RecordRing::pop(double* out, int64_t max_count) {
  NDT_CHECK_ARG(max_count >= 0, "max_count must be >= 0, got " << max_count);
  std::lock_guard<std::mutex> lock(mutex_);
  const int64_t count = copy_out(out, std::min(max_count, size_));
  head_ = (head_ + count) % capacity_;
  size_ -= count;
  return count;
}

int64_t RecordRing::peek(double* out) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return copy_out(out, size_);
}

int64_t RecordRing::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return size_;
}

int64_t RecordRing::total_pushed() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return total_pushed_;
}

}  // namespace ndt
