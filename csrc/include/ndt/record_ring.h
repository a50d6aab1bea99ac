// Bounded ring of fixed-width float64 records, written by the training thread and drained by
// the storage writer (the "ring buffer of fixed-size records" of DESIGN.md).
//
// A record is `width` doubles; its meaning (kind, layer, step, metrics, …) is the Python
// storage layer's business (ndt_fast/storage/records.py). Memory is allocated once, at
// construction: capacity × width × 8 bytes, whatever the length of the run.
//
// Thread safety: every member may be called from any thread; one mutex guards the state and is
// held only for a memcpy (no allocation, no I/O under it).
#pragma once

#include <cstdint>
#include <mutex>
#include <vector>

namespace ndt {

class RecordRing {
 public:
  /// capacity ≥ 1 records of width ≥ 1 doubles; invalid → std::invalid_argument.
  RecordRing(int64_t capacity, int64_t width);

  /// Appends `count` records (count × width doubles, row-major) if all of them fit; returns
  /// false and appends nothing otherwise (the caller decides what a full ring means).
  bool push(const double* rows, int64_t count);

  /// Moves up to `max_count` of the oldest records into `out` (max_count × width doubles,
  /// row-major), oldest first; returns how many were moved.
  int64_t pop(double* out, int64_t max_count);

  /// Copies the records currently held, oldest first, without removing them; returns the count.
  /// `out` must hold capacity() × width() doubles.
  int64_t peek(double* out) const;

  int64_t size() const;
  int64_t capacity() const { return capacity_; }
  int64_t width() const { return width_; }
  /// Records accepted by push() since construction (popped ones included).
  int64_t total_pushed() const;

 private:
  int64_t copy_out(double* out, int64_t count) const;  // the `count` oldest, mutex held

  const int64_t capacity_;
  const int64_t width_;
  std::vector<double> slots_;  // capacity_ × width_
  int64_t head_ = 0;           // index of the oldest record
  int64_t size_ = 0;
  int64_t total_pushed_ = 0;
  mutable std::mutex mutex_;
};

}  // namespace ndt
