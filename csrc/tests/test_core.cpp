// Native tests of the core, built with -DNDT_BUILD_TESTS=ON and run by ctest — in CI under
// AddressSanitizer + UndefinedBehaviorSanitizer (-DNDT_SANITIZE=ON). No BLAS/LAPACK is registered
// here, so these exercise the core's own kernels; the Python tests cover the BLAS/LAPACK paths.
//
// References are deliberately naive and independent of the code under test: the Gram by a triple
// loop in long double, eigenvalues by the cyclic Jacobi method.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <atomic>
#include <chrono>

#include <sys/wait.h>
#include <unistd.h>

#include "ndt/eigen.h"
#include "ndt/gram.h"
#include "ndt/jumps.h"
#include "ndt/metrics.h"
#include "ndt/parallel.h"
#include "ndt/record_ring.h"
#include "ndt/record_schema.h"
#include "ndt/sample_finish.h"
#include "ndt/worker_thread.h"

namespace {

int g_failures = 0;
uint64_t g_seed = 0;

#define EXPECT(cond, ...)                                                        \
  do {                                                                           \
    if (!(cond)) {                                                               \
      ++g_failures;                                                              \
      std::fprintf(stderr, "FAIL %s:%d (seed %llu): %s — ", __FILE__, __LINE__,  \
                   static_cast<unsigned long long>(g_seed), #cond);              \
      std::fprintf(stderr, __VA_ARGS__);                                         \
      std::fprintf(stderr, "\n");                                                \
    }                                                                            \
  } while (0)

uint16_t float_to_bfloat16(float f) {  // round to nearest even
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float bfloat16_to_float(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Cyclic Jacobi: slow, simple, accurate — the eigenvalue reference.
std::vector<double> jacobi_eigenvalues(std::vector<double> a, int64_t n) {
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0.0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j)
        if (i != j) off += a[i * n + j] * a[i * n + j];
    if (off < 1e-30) break;
    for (int64_t p = 0; p < n; ++p) {
      for (int64_t q = p + 1; q < n; ++q) {
        const double apq = a[p * n + q];
        if (apq == 0.0) continue;
        const double theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(theta * theta + 1.0));
        const double c = 1.0 / std::sqrt(t * t + 1.0), s = t * c;
        for (int64_t k = 0; k < n; ++k) {  // columns p, q
          const double akp = a[k * n + p], akq = a[k * n + q];
          a[k * n + p] = c * akp - s * akq;
          a[k * n + q] = s * akp + c * akq;
        }
        for (int64_t k = 0; k < n; ++k) {  // rows p, q
          const double apk = a[p * n + k], aqk = a[q * n + k];
          a[p * n + k] = c * apk - s * aqk;
          a[q * n + k] = s * apk + c * aqk;
        }
      }
    }
  }
  std::vector<double> w(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) w[static_cast<size_t>(i)] = a[i * n + i];
  std::sort(w.begin(), w.end(), std::greater<double>());
  return w;
}

struct Matrix {
  int64_t rows, cols;
  std::vector<double> values;  // row-major, exact values (already rounded to the storage dtype)
  double at(int64_t i, int64_t j) const { return values[static_cast<size_t>(i * cols + j)]; }
};

// Stores `m` as `dtype` in a buffer with the given layout; returns the view and owns the bytes.
struct Stored {
  std::vector<unsigned char> bytes;
  ndt::MatrixView view;
};

Stored store(Matrix& m, ndt::DType dtype, bool transposed_layout, bool reversed_rows) {
  Stored s;
  const int64_t es = ndt::dtype_size(dtype);
  s.bytes.resize(static_cast<size_t>(m.rows * m.cols * es));
  int64_t rs = transposed_layout ? 1 : m.cols, cs = transposed_layout ? m.rows : 1;
  for (int64_t i = 0; i < m.rows; ++i) {
    for (int64_t j = 0; j < m.cols; ++j) {
      double& v = m.values[static_cast<size_t>(i * m.cols + j)];
      unsigned char* p = s.bytes.data() + (i * rs + j * cs) * es;
      switch (dtype) {
        case ndt::DType::float64: std::memcpy(p, &v, 8); break;
        case ndt::DType::float32: { float f = static_cast<float>(v); v = f; std::memcpy(p, &f, 4); break; }
        case ndt::DType::bfloat16: {
          uint16_t b = float_to_bfloat16(static_cast<float>(v));
          v = bfloat16_to_float(b);
          std::memcpy(p, &b, 2);
          break;
        }
        case ndt::DType::float16: {
          // Integers up to 2048 in magnitude are exact in float16: encode them directly.
          const float f = std::round(static_cast<float>(v));
          v = f;
          uint16_t h = 0;
          if (f != 0.0f) {
            const int e = static_cast<int>(std::floor(std::log2(std::fabs(f))));
            const uint32_t mant = static_cast<uint32_t>(std::ldexp(std::fabs(f), 10 - e)) & 0x3ffu;
            h = static_cast<uint16_t>((f < 0 ? 0x8000u : 0u) | (static_cast<uint32_t>(e + 15) << 10) | mant);
          }
          std::memcpy(p, &h, 2);
          break;
        }
      }
    }
  }
  s.view.data = s.bytes.data();
  s.view.dtype = dtype;
  s.view.rows = m.rows;
  s.view.cols = m.cols;
  s.view.row_stride = rs;
  s.view.col_stride = cs;
  if (reversed_rows && m.rows > 1) {  // negative row stride: view row i is stored row rows-1-i
    s.view.data = s.bytes.data() + (m.rows - 1) * rs * es;
    s.view.row_stride = -rs;
    std::vector<double> flipped(m.values.size());
    for (int64_t i = 0; i < m.rows; ++i)
      for (int64_t j = 0; j < m.cols; ++j)
        flipped[static_cast<size_t>(i * m.cols + j)] = m.values[static_cast<size_t>((m.rows - 1 - i) * m.cols + j)];
    m.values = flipped;
  }
  return s;
}

Matrix random_matrix(std::mt19937_64& rng, int64_t rows, int64_t cols, int kind) {
  std::normal_distribution<double> normal;
  Matrix m{rows, cols, std::vector<double>(static_cast<size_t>(rows * cols))};
  for (auto& v : m.values) v = normal(rng);
  if (kind == 1) for (auto& v : m.values) v = std::max(v, 0.0);                      // ReLU
  if (kind == 2) for (int64_t i = 0; i < rows; ++i) for (int64_t j = 0; j < cols; ++j)  // rank 1
        m.values[static_cast<size_t>(i * cols + j)] = m.values[static_cast<size_t>(i)] * m.values[static_cast<size_t>(j)];
  if (kind == 3) for (auto& v : m.values) v = 0.0;                                    // zero
  if (kind == 4) for (auto& v : m.values) v = std::round(8.0 * v);                    // float16-exact
  return m;
}

std::vector<double> reference_gram(const Matrix& m, ndt::GramSide side) {
  const bool feature = side == ndt::GramSide::feature;
  const int64_t n = feature ? m.cols : m.rows, k = feature ? m.rows : m.cols;
  std::vector<double> g(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      long double s = 0;
      for (int64_t t = 0; t < k; ++t)
        s += static_cast<long double>(feature ? m.at(t, i) * m.at(t, j) : m.at(i, t) * m.at(j, t));
      g[static_cast<size_t>(i * n + j)] = static_cast<double>(s);
    }
  return g;
}

void test_gram_all_dtypes_layouts(std::mt19937_64& rng) {
  const ndt::DType dtypes[] = {ndt::DType::float32, ndt::DType::float64, ndt::DType::float16, ndt::DType::bfloat16};
  for (ndt::DType dtype : dtypes)
    for (int layout = 0; layout < 4; ++layout)
      for (int64_t rows : {1, 3, 17, 300})
        for (int64_t cols : {1, 5, 33}) {
          Matrix m = random_matrix(rng, rows, cols, dtype == ndt::DType::float16 ? 4 : 0);
          Stored s = store(m, dtype, layout & 1, layout & 2);
          for (ndt::GramSide side : {ndt::GramSide::feature, ndt::GramSide::sample}) {
            const std::vector<double> ref = reference_gram(m, side);
            const int64_t n = side == ndt::GramSide::feature ? cols : rows;
            std::vector<double> g(static_cast<size_t>(n * n), 0.0);
            ndt::gram_update<double>(s.view, side, g.data());
            double scale = 1e-300, err = 0.0;
            for (int64_t i = 0; i < n; ++i)
              for (int64_t j = 0; j <= i; ++j) {
                scale = std::max(scale, std::fabs(ref[static_cast<size_t>(i * n + j)]));
                err = std::max(err, std::fabs(g[static_cast<size_t>(i * n + j)] - ref[static_cast<size_t>(i * n + j)]));
              }
            EXPECT(err <= 1e-12 * scale, "gram %s layout %d %lldx%lld side %d: err %g scale %g",
                   ndt::dtype_name(dtype), layout, static_cast<long long>(rows), static_cast<long long>(cols),
                   static_cast<int>(side), err, scale);
          }
        }
}

void test_accumulator(std::mt19937_64& rng) {
  const int64_t d = 20;
  ndt::GramAccumulator acc(d, ndt::GramSide::feature);
  Matrix all{0, d, {}};
  for (int64_t rows : {1, 7, 64, 3}) {
    Matrix m = random_matrix(rng, rows, d, 1);
    Stored s = store(m, ndt::DType::float32, false, false);
    acc.add(s.view);
    all.values.insert(all.values.end(), m.values.begin(), m.values.end());
    all.rows += rows;
  }
  EXPECT(acc.rows_seen() == all.rows, "rows_seen %lld", static_cast<long long>(acc.rows_seen()));
  std::vector<double> g(static_cast<size_t>(d * d));
  acc.symmetric_gram(g.data());
  const std::vector<double> ref = reference_gram(all, ndt::GramSide::feature);
  for (size_t i = 0; i < g.size(); ++i) EXPECT(std::fabs(g[i] - ref[i]) <= 1e-9 * (1 + std::fabs(ref[i])), "acc %zu", i);

  // Sample side holds one batch; a second add is a user error.
  ndt::GramAccumulator sample(4, ndt::GramSide::sample);
  Matrix m = random_matrix(rng, 4, 9, 0);
  Stored s = store(m, ndt::DType::float64, false, false);
  sample.add(s.view);
  bool threw = false;
  try { sample.add(s.view); } catch (const std::invalid_argument&) { threw = true; }
  EXPECT(threw, "second sample-side add must throw");
  threw = false;
  try { acc.add(s.view); } catch (const std::invalid_argument&) { threw = true; }
  EXPECT(threw, "column mismatch must throw");
}

void test_eigenvalues(std::mt19937_64& rng) {
  for (int64_t n : {1, 2, 3, 10, 40, 97, 130}) {
    for (int kind = 0; kind < 4; ++kind) {
      Matrix x = random_matrix(rng, n + 3, n, kind == 3 ? 0 : kind);
      std::vector<double> a = reference_gram(x, ndt::GramSide::feature);
      if (kind == 3) {  // repeated eigenvalues: identity times 5 plus rank-1
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j < n; ++j) a[static_cast<size_t>(i * n + j)] = (i == j ? 5.0 : 0.0) + 1.0;
      }
      const std::vector<double> ref = jacobi_eigenvalues(a, n);
      for (ndt::EigenSolver solver : {ndt::EigenSolver::tridiagonal_ql, ndt::EigenSolver::automatic}) {
        std::vector<double> work = a, w(static_cast<size_t>(n));
        const bool ok = ndt::symmetric_eigenvalues(work.data(), n, w.data(), solver);
        EXPECT(ok, "n=%lld kind %d did not converge", static_cast<long long>(n), kind);
        const double scale = std::max(std::fabs(ref.front()), std::fabs(ref.back())) + 1e-300;
        for (int64_t i = 0; i < n; ++i)
          EXPECT(std::fabs(w[static_cast<size_t>(i)] - ref[static_cast<size_t>(i)]) <= 1e-11 * scale,
                 "n=%lld kind %d λ[%lld] %.17g vs %.17g", static_cast<long long>(n), kind, static_cast<long long>(i),
                 w[static_cast<size_t>(i)], ref[static_cast<size_t>(i)]);
      }
    }
  }
  // Non-finite input: false, NaN output, no hang.
  std::vector<double> a = {1.0, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::quiet_NaN(), 2.0};
  std::vector<double> w(2);
  EXPECT(!ndt::symmetric_eigenvalues(a.data(), 2, w.data()), "NaN input must report failure");
  EXPECT(std::isnan(w[0]) && std::isnan(w[1]), "NaN input must give NaN eigenvalues");
  // Huge and tiny scales.
  for (double scale : {1e150, 1e-150}) {
    std::vector<double> b = {2.0 * scale, 1.0 * scale, 1.0 * scale, 2.0 * scale}, v(2);
    EXPECT(ndt::symmetric_eigenvalues(b.data(), 2, v.data()), "scale %g", scale);
    EXPECT(std::fabs(v[0] / scale - 3.0) < 1e-14 && std::fabs(v[1] / scale - 1.0) < 1e-14, "scale %g: %g %g", scale, v[0], v[1]);
  }
}

void test_metrics(std::mt19937_64& rng) {
  ndt::MetricOptions o;
  // Zero matrix: every metric 0, flagged.
  Matrix z = random_matrix(rng, 5, 8, 3);
  Stored sz = store(z, ndt::DType::float32, false, false);
  ndt::Metrics mz = ndt::metrics_of_matrix(sz.view, o);
  EXPECT(mz.flags == ndt::kFlagZero && mz.stable_rank == 0.0 && mz.participation_ratio == 0.0 &&
             mz.cumulative_90 == 0.0 && mz.nuclear_norm_ratio == 0.0 && mz.effective_rank == 0.0,
         "zero matrix flags %u", mz.flags);
  // NaN anywhere: every metric NaN, flagged.
  Matrix q = random_matrix(rng, 6, 4, 0);
  q.values[7] = std::numeric_limits<double>::infinity();
  Stored sq = store(q, ndt::DType::float64, false, false);
  ndt::Metrics mq = ndt::metrics_of_matrix(sq.view, o);
  EXPECT((mq.flags & ndt::kFlagNonFinite) && std::isnan(mq.stable_rank) && std::isnan(mq.cumulative_90),
         "non-finite flags %u", mq.flags);
  // Rank 1: stable rank, PR, CE90, NNR, effective rank all 1 (eps = 0).
  o.eps = 0.0;
  Matrix r1 = random_matrix(rng, 30, 12, 2);
  Stored s1 = store(r1, ndt::DType::float64, true, false);
  ndt::Metrics m1 = ndt::metrics_of_matrix(s1.view, o);
  EXPECT(std::fabs(m1.stable_rank - 1) < 1e-9 && std::fabs(m1.participation_ratio - 1) < 1e-6 &&
             m1.cumulative_90 == 1.0 && std::fabs(m1.participation_ratio_eig - 1) < 1e-9,
         "rank-1: sr %.17g pr %.17g ce %g pre %.17g", m1.stable_rank, m1.participation_ratio, m1.cumulative_90,
         m1.participation_ratio_eig);
  // Trace-only path agrees with the full path.
  Matrix x = random_matrix(rng, 50, 40, 1);
  Stored sx = store(x, ndt::DType::float32, false, true);
  ndt::Metrics full = ndt::metrics_of_matrix(sx.view, o);
  o.metrics = ndt::kStableRank | ndt::kParticipationRatioEig;
  ndt::Metrics fast = ndt::metrics_of_matrix(sx.view, o);
  EXPECT(std::fabs(fast.stable_rank - full.stable_rank) <= 1e-6 * full.stable_rank, "trace-only sr %.17g vs %.17g",
         fast.stable_rank, full.stable_rank);
  EXPECT(std::isnan(fast.participation_ratio), "unrequested metric must be NaN");
  // Bad options are user errors.
  bool threw = false;
  o.energy_threshold = 1.5;
  try { ndt::metrics_of_matrix(sx.view, o); } catch (const std::invalid_argument&) { threw = true; }
  EXPECT(threw, "threshold 1.5 must throw");
  // Empty and null views are user errors.
  threw = false;
  ndt::MatrixView empty;
  try { ndt::metrics_of_matrix(empty, ndt::MetricOptions{}); } catch (const std::invalid_argument&) { threw = true; }
  EXPECT(threw, "empty view must throw");
}

void test_batched_parallel(std::mt19937_64& rng) {
  // The batched entry point (threads across matrices) gives what one-at-a-time calls give.
  std::vector<Matrix> ms;
  std::vector<Stored> stored;
  for (int64_t n : {250, 240, 8, 260}) ms.push_back(random_matrix(rng, n, n + 30, 1));  // > 5e7 flops: threaded
  for (auto& m : ms) stored.push_back(store(m, ndt::DType::float32, false, false));
  std::vector<ndt::MatrixView> views;
  for (auto& s : stored) views.push_back(s.view);
  ndt::MetricOptions o;
  std::vector<ndt::Metrics> batch(views.size());
  ndt::set_max_threads(4);
  ndt::metrics_of_matrices(views, o, batch.data());
  for (size_t i = 0; i < views.size(); ++i) {
    const ndt::Metrics one = ndt::metrics_of_matrix(views[i], o);
    EXPECT(one.stable_rank == batch[i].stable_rank && one.cumulative_90 == batch[i].cumulative_90,
           "batch %zu: %.17g vs %.17g", i, batch[i].stable_rank, one.stable_rank);
  }
  // A failing task's exception reaches the caller after every thread has finished.
  views[2].data = nullptr;
  bool threw = false;
  try { ndt::metrics_of_matrices(views, o, batch.data()); } catch (const std::invalid_argument&) { threw = true; }
  EXPECT(threw, "an invalid view inside a batch must throw std::invalid_argument");
  ndt::set_max_threads(static_cast<int>(std::thread::hardware_concurrency()));
}

void test_thread_budget() {
  // Work above the threading threshold: 4 tasks, 1e9 "flops". Budget 1: every task on the
  // caller's thread. Budget 4 with 4 threads allowed: the tasks may spread, and each worker runs
  // with its share (4 / 4 = 1). After the scopes the budget is back to automatic (0).
  ndt::set_max_threads(4);
  const std::thread::id caller = std::this_thread::get_id();
  std::vector<std::thread::id> ran_on(4);
  std::vector<int> budget_seen(4, -1);
  auto task = [&](int64_t i) {
    ran_on[static_cast<size_t>(i)] = std::this_thread::get_id();
    budget_seen[static_cast<size_t>(i)] = ndt::thread_budget();
  };
  {
    const ndt::ThreadBudgetScope one(1);
    EXPECT(!ndt::parallel_worthwhile(4, 1e9), "a budget of 1 must not start threads");
    ndt::parallel_for(4, 1e9, task);
    for (size_t i = 0; i < 4; ++i)
      EXPECT(ran_on[i] == caller && budget_seen[i] == 1, "budget 1: task %zu left the caller's thread or lost its budget", i);
  }
  {
    const ndt::ThreadBudgetScope four(4);
    EXPECT(ndt::parallel_worthwhile(4, 1e9), "a budget of 4 with 4 threads allowed must thread this work");
    ndt::parallel_for(4, 1e9, task);
    for (size_t i = 0; i < 4; ++i) EXPECT(budget_seen[i] == 1, "budget 4 over 4 workers: task %zu saw %d", i, budget_seen[i]);
    EXPECT(ndt::thread_budget() == 4, "the caller's budget must survive its own worker share");
  }
  EXPECT(ndt::thread_budget() == 0, "budget not restored: %d", ndt::thread_budget());
  ndt::set_max_threads(static_cast<int>(std::thread::hardware_concurrency()));
}

}  // namespace

// The ring against a plain FIFO under random pushes/pops (wraps included), then one producer and
// one consumer thread moving 100k records: every record arrives once, in order (ASan watches).
void test_record_ring(std::mt19937_64& rng) {
  constexpr int64_t kWidth = 3;
  ndt::RecordRing ring(7, kWidth);
  std::vector<double> fifo;
  double next = 0;
  for (int round = 0; round < 2000; ++round) {
    const int64_t n = static_cast<int64_t>(rng() % 4);
    std::vector<double> rows(static_cast<size_t>(n * kWidth));
    for (auto& v : rows) v = next++;
    const bool fits = static_cast<int64_t>(fifo.size()) / kWidth + n <= 7;
    EXPECT(ring.push(rows.data(), n) == fits, "push of %lld rows: fits=%d", static_cast<long long>(n), fits);
    if (fits) fifo.insert(fifo.end(), rows.begin(), rows.end());
    else next -= static_cast<double>(n * kWidth);
    const int64_t want = static_cast<int64_t>(rng() % 5);
    std::vector<double> out(static_cast<size_t>(want * kWidth));
    const int64_t got = ring.pop(out.data(), want);
    EXPECT(got == std::min<int64_t>(want, static_cast<int64_t>(fifo.size()) / kWidth), "pop count");
    EXPECT(std::equal(out.begin(), out.begin() + got * kWidth, fifo.begin()), "pop order");
    fifo.erase(fifo.begin(), fifo.begin() + got * kWidth);
    EXPECT(ring.size() == static_cast<int64_t>(fifo.size()) / kWidth, "size");
  }
  bool threw = false;
  try {
    ndt::RecordRing bad(0, 3);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  EXPECT(threw, "capacity 0 must be rejected");

  ndt::RecordRing shared(64, 2);
  constexpr int64_t kRecords = 100000;
  std::thread producer([&] {
    for (int64_t i = 0; i < kRecords;) {
      const double row[2] = {static_cast<double>(i), -static_cast<double>(i)};
      if (shared.push(row, 1)) ++i;
      else std::this_thread::yield();
    }
  });
  int64_t expected = 0;
  bool in_order = true;
  std::vector<double> out(64 * 2);
  while (expected < kRecords) {
    const int64_t got = shared.pop(out.data(), 64);
    for (int64_t j = 0; j < got; ++j, ++expected)
      in_order = in_order && out[j * 2] == static_cast<double>(expected) && out[j * 2 + 1] == -out[j * 2];
    if (got == 0) std::this_thread::yield();
  }
  producer.join();
  EXPECT(in_order && shared.total_pushed() == kRecords, "threaded transfer lost or reordered records");
}

// JumpBank (the Python tests compare it with the numpy references): a planted step (50σ, so its
// location is certain) is found by both rules at its index,
// with its training step; NaN and inf are handled as the numpy references handle them; push_many
// equals pushes one by one; bad parameters throw std::invalid_argument.
void test_jump_bank(std::mt19937_64& rng) {
  constexpr int64_t kN = 700, kStepAt = 400;
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  std::normal_distribution<double> noise(0.0, 0.1);
  std::vector<double> values(kN * 2);  // row-major (push, series)
  std::vector<int64_t> steps(kN);
  for (int64_t i = 0; i < kN; ++i) {
    const double x = 1e6 + noise(rng) + (i >= kStepAt ? 5.0 : 0.0);
    values[i * 2] = x;                                         // series 0: clean
    values[i * 2 + 1] = (i == 60 || i == 200 || i == 333) ? nan : x;  // series 1: NaN holes
    steps[i] = 10 * i + 7;
  }
  values[550 * 2 + 1] = inf;  // series 1: ndt reports it (finite window), the default rule skips it

  ndt::JumpBank bank(2, ndt::NdtRule{}, ndt::DefaultRule{});
  std::vector<ndt::JumpEvent> events;
  for (int64_t i = 0; i < kN; ++i) bank.push(steps[i], values.data() + i * 2, events);
  EXPECT(bank.samples_seen() == kN && bank.series() == 2, "samples_seen %lld", static_cast<long long>(bank.samples_seen()));

  auto find = [&](int64_t series, int32_t rule, int64_t index) -> const ndt::JumpEvent* {
    for (const auto& e : events)
      if (e.series == series && e.rule == rule && e.index == index) return &e;
    return nullptr;
  };
  for (int64_t s = 0; s < 2; ++s) {
    const ndt::JumpEvent* e = find(s, ndt::kNdtRule, kStepAt);
    EXPECT(e && e->z > 3.0 && e->step == 10 * kStepAt + 7 && e->before == values[(kStepAt - 1) * 2 + s] &&
               e->after == values[kStepAt * 2 + s],
           "series %lld: ndt rule misses the step", static_cast<long long>(s));
    e = find(s, ndt::kDefaultRule, kStepAt);
    EXPECT(e && e->z > 5.0 && e->step == 10 * kStepAt + 7 && e->after == values[kStepAt * 2 + s],
           "series %lld: default rule misses the step", static_cast<long long>(s));
  }
  // NaN at 60, 200, 333: no ndt detection while it is in the 50-sample window
  for (const auto& e : events)
    if (e.series == 1 && e.rule == ndt::kNdtRule)
      for (int64_t hole : {60, 200, 333, 550})
        EXPECT(!(e.index >= hole + (hole == 550) && e.index <= hole + 50), "ndt detection at %lld near %lld",
               static_cast<long long>(e.index), static_cast<long long>(hole));
  const ndt::JumpEvent* at_inf = find(1, ndt::kNdtRule, 550);
  EXPECT(at_inf && at_inf->z == inf && at_inf->after == inf, "inf after a finite window is a jump with z = inf");

  // push_many gives the same events
  ndt::JumpBank again(2, ndt::NdtRule{}, ndt::DefaultRule{});
  std::vector<ndt::JumpEvent> batch;
  again.push_many(kN, steps.data(), values.data(), batch);
  bool same = batch.size() == events.size();
  for (size_t i = 0; same && i < batch.size(); ++i)
    same = batch[i].series == events[i].series && batch[i].rule == events[i].rule &&
           batch[i].index == events[i].index && batch[i].step == events[i].step &&
           batch[i].before == events[i].before && batch[i].after == events[i].after &&
           (batch[i].z == events[i].z || (std::isnan(batch[i].z) && std::isnan(events[i].z)));
  EXPECT(same, "push_many differs from push (%zu vs %zu events)", batch.size(), events.size());

  // numpy's sum: exact on integers, 0.0 for nothing
  std::vector<double> ints(1000);
  for (size_t i = 0; i < ints.size(); ++i) ints[i] = static_cast<double>(i);
  EXPECT(ndt::numpy_sum(ints.data(), 1000) == 499500.0 && ndt::numpy_sum(ints.data(), 0) == 0.0, "numpy_sum");

  // Random parameters (blocks up to 40: the 7-network, insertion sort and std::sort) on adversarial
  // values — NaN, ±inf, ±0, huge, tiny, constant runs, big steps — for the sanitizers; events must
  // be in range and, per series and rule, in increasing index order.
  for (int round = 0; round < 12; ++round) {
    ndt::NdtRule nr;
    nr.window = 2 + static_cast<int64_t>(rng() % 60);
    nr.z_threshold = 0.5 + static_cast<double>(rng() % 50) / 10.0;
    nr.min_samples = 1 + static_cast<int64_t>(rng() % 30);
    ndt::DefaultRule dr;
    dr.block = 3 + static_cast<int64_t>(rng() % 38);
    dr.window = 5 + static_cast<int64_t>(rng() % 120);
    dr.min_reference = 1 + static_cast<int64_t>(rng() % static_cast<uint64_t>(dr.window));
    dr.threshold = 1.0 + static_cast<double>(rng() % 60) / 10.0;
    const int64_t series = 1 + static_cast<int64_t>(rng() % 4), pushes = 2500;
    ndt::JumpBank fuzz(series, nr, dr);
    std::vector<double> row(static_cast<size_t>(series));
    std::vector<ndt::JumpEvent> out;
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    double level = 0.0;
    for (int64_t i = 0; i < pushes; ++i) {
      for (auto& v : row) {
        const double u = unit(rng);
        if (u < 0.01) level += (unit(rng) - 0.5) * 1e3;
        v = u < 0.02 ? nan : u < 0.03 ? inf : u < 0.04 ? -inf : u < 0.06 ? 0.0 : u < 0.08 ? -0.0
            : u < 0.09 ? (unit(rng) - 0.5) * 1e300 : u < 0.10 ? 1e-300 * unit(rng)
            : u < 0.30 ? level : level + noise(rng);
      }
      fuzz.push(i, row.data(), out);
    }
    std::vector<int64_t> last(static_cast<size_t>(2 * series), -1);
    bool ordered = true;
    for (const auto& e : out) {
      int64_t& prev = last[static_cast<size_t>(2 * e.series + e.rule)];
      ordered = ordered && e.series >= 0 && e.series < series && e.index > prev && e.index < pushes &&
                e.step == e.index;
      prev = e.index;
    }
    EXPECT(ordered, "round %d: events out of range or order", round);
  }

  auto throws = [](auto make) {
    try {
      make();
    } catch (const std::invalid_argument&) {
      return true;
    }
    return false;
  };
  ndt::NdtRule n;
  ndt::DefaultRule d;
  EXPECT(throws([&] { ndt::JumpBank b(0, n, d); }), "0 series");
  n.window = 1;
  EXPECT(throws([&] { ndt::JumpBank b(1, n, d); }), "ndt window 1");
  n = {};
  n.z_threshold = nan;
  EXPECT(throws([&] { ndt::JumpBank b(1, n, d); }), "ndt z_threshold NaN");
  n = {};
  n.min_samples = 0;
  EXPECT(throws([&] { ndt::JumpBank b(1, n, d); }), "ndt min_samples 0");
  n = {};
  d.block = 2;
  EXPECT(throws([&] { ndt::JumpBank b(1, n, d); }), "block 2");
  d = {};
  d.min_reference = d.window + 1;
  EXPECT(throws([&] { ndt::JumpBank b(1, n, d); }), "min_reference > window");
  d = {};
  d.threshold = 0.0;
  EXPECT(throws([&] { ndt::JumpBank b(1, n, d); }), "threshold 0");
  d = {};
  d.min_scale = 0.0;
  EXPECT(throws([&] { ndt::JumpBank b(1, n, d); }), "min_scale 0");
}

void test_largest_eigenvalue(std::mt19937_64& rng) {
  // Lanczos λmax against the Jacobi reference, on spectra where power iteration is slow: a top
  // pair 1 % apart, an exactly repeated top eigenvalue, rank 1, a 1×1, and Grams of signed data.
  std::normal_distribution<double> normal;
  for (int64_t n : {1, 2, 5, 40, 130}) {
    for (int kind = 0; kind < 4; ++kind) {
      Matrix x = random_matrix(rng, n + 3, n, kind % 3);
      std::vector<double> a = reference_gram(x, ndt::GramSide::feature);
      if (kind == 3 && n >= 2) {  // spectrum 0.99^k (λ₂/λ₁ = 0.99) in a random Householder basis H D H
        std::vector<double> v(static_cast<size_t>(n));
        double norm_sq = 0.0;
        for (double& vi : v) { vi = normal(rng); norm_sq += vi * vi; }
        for (double& vi : v) vi /= std::sqrt(norm_sq);
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j < n; ++j) {  // H D H with H = I − 2vvᵀ
            double s = 0.0;
            for (int64_t k = 0; k < n; ++k) {
              const double hik = (i == k ? 1.0 : 0.0) - 2.0 * v[static_cast<size_t>(i)] * v[static_cast<size_t>(k)];
              const double hkj = (k == j ? 1.0 : 0.0) - 2.0 * v[static_cast<size_t>(k)] * v[static_cast<size_t>(j)];
              s += hik * std::pow(0.99, static_cast<double>(k)) * hkj;
            }
            a[static_cast<size_t>(i * n + j)] = s;
          }
      }
      const double ref = jacobi_eigenvalues(a, n).front();
      double got = 0.0;
      const bool ok = ndt::largest_eigenvalue_psd(a.data(), n, &got, 1e-8, n);
      EXPECT(ok, "largest_eigenvalue_psd n=%lld kind %d did not converge in n steps", static_cast<long long>(n), kind);
      EXPECT(std::fabs(got - ref) <= 1e-8 * ref, "largest_eigenvalue_psd n=%lld kind %d: %.17g vs %.17g",
             static_cast<long long>(n), kind, got, ref);
    }
  }
  // Repeated top eigenvalue (5·I + 1·1ᵀ has λ₁ = 5 + n once, then 5 repeated) and a rank-1 Gram.
  const int64_t n = 30;
  std::vector<double> a(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) a[static_cast<size_t>(i * n + j)] = (i == j ? 5.0 : 0.0) + 1.0;
  double got = 0.0;
  EXPECT(ndt::largest_eigenvalue_psd(a.data(), n, &got) && std::fabs(got - 35.0) < 1e-12 * 35.0, "5I+11ᵀ: %.17g", got);
  std::vector<double> r(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) r[static_cast<size_t>(i * n + j)] = static_cast<double>((i + 1) * (j + 1));
  const double rank1 = static_cast<double>(n * (n + 1) * (2 * n + 1) / 6);  // Σ (i+1)²
  EXPECT(ndt::largest_eigenvalue_psd(r.data(), n, &got) && std::fabs(got - rank1) < 1e-12 * rank1, "rank 1: %.17g", got);
  // Zero → 0; NaN → false, no hang.
  std::vector<double> z(4, 0.0);
  EXPECT(ndt::largest_eigenvalue_psd(z.data(), 2, &got) && got == 0.0, "zero matrix: %g", got);
  z[1] = std::numeric_limits<double>::quiet_NaN();
  EXPECT(!ndt::largest_eigenvalue_psd(z.data(), 2, &got), "NaN matrix must report failure");
}

void test_sample_finish(std::mt19937_64& rng) {
  namespace rec = ndt::record;
  std::normal_distribution<float> normal;
  ndt::SampleFinishOptions o;
  o.layers = 3;
  ndt::SampleFinisher finisher(o);
  const int64_t width = finisher.width();
  EXPECT(width == rec::kHeaderWidth + rec::kSampleColumnCount, "width %lld", static_cast<long long>(width));
  // Two layers' Grams (sample side 12 x 12 from 12 x 20; feature side 5 x 5 from 12 x 5); layer 2 failed.
  std::vector<float> a(12 * 20), b(12 * 5);
  for (auto& v : a) v = normal(rng);
  for (auto& v : b) v = normal(rng);
  const ndt::MatrixView va{a.data(), ndt::DType::float32, 12, 20, 20, 1};
  const ndt::MatrixView vb{b.data(), ndt::DType::float32, 12, 5, 5, 1};
  ndt::GramAccumulator ga(12, ndt::GramSide::sample), gb(5, ndt::GramSide::feature);
  ga.add(va);
  gb.add(vb);
  const ndt::Metrics want[2] = {ndt::metrics_of_matrix(va, o.activations), ndt::metrics_of_matrix(vb, o.activations)};
  ndt::RecordRing ring(16, width);
  ndt::SampleOutcome out;
  finisher.finish({7, 0.5, std::numeric_limits<double>::quiet_NaN()}, {0, 1}, {&ga, &gb}, {nullptr, nullptr}, {2},
                  &ring, out);
  EXPECT(out.overflow.empty() && out.jumps.empty() && out.weight_error.empty(), "nothing left over");
  EXPECT(ga.rows_seen() == 0 && gb.rows_seen() == 0, "accumulators reset after the sample");
  std::vector<double> rows(static_cast<size_t>(16 * width));
  EXPECT(ring.pop(rows.data(), 16) == 3, "one record per layer");
  for (int i = 0; i < 3; ++i) {
    const double* r = &rows[static_cast<size_t>(i * width)];
    EXPECT(r[0] == rec::kKindSample && r[1] == i && r[rec::kStep] == 7 && r[rec::kLoss] == 0.5 &&
               std::isnan(r[rec::kGradNorm]),
           "header/scalars of layer %d", i);
    if (i < 2) {
      double m[rec::kMetricWidth];
      rec::write_metrics(want[i], m);
      for (int j = 0; j < 4; ++j) EXPECT(r[rec::kNdtMetrics + j] == m[j], "layer %d metric %d", i, j);
      for (int j = 0; j < 5; ++j) EXPECT(r[rec::kExtras + j] == m[4 + j], "layer %d extra %d", i, j);
      EXPECT(r[rec::kRows] == 12, "rows of layer %d", i);
    } else {
      EXPECT(std::isnan(r[rec::kNdtMetrics]) && r[rec::kExtras + 4] == rec::kFlagTrackerError && r[rec::kRows] == 0,
             "the failed layer's row is NaN and flagged");
    }
  }
  // A full ring: everything comes back as overflow, in order.
  ndt::RecordRing tiny(1, width);
  ga.add(va);
  out.clear();
  finisher.finish({8, 1.0, 2.0}, {0}, {&ga}, {nullptr}, {1}, &tiny, out);
  EXPECT(static_cast<int64_t>(out.overflow.size()) == 2 * width && out.overflow[1] == 0 && out.overflow[width + 1] == 1,
         "overflow holds both records");
  // record(): a level change in layer 1's series is detected, reported and recorded as a jump record.
  std::vector<double> metrics(rec::kMetricWidth), jumps_seen;
  const int64_t layer = 1, rows_seen = 4;
  for (int step = 0; step < 400; ++step) {
    for (int j = 0; j < rec::kMetricCount; ++j) metrics[static_cast<size_t>(j)] = (step < 300 ? 1.0 : 5.0) + 0.01 * normal(rng);
    metrics[rec::kMetricWidth - 1] = 0;
    out.clear();
    finisher.record({step, 0.0, 0.0}, 1, &layer, metrics.data(), nullptr, &rows_seen, &ring, out);
    for (size_t k = 0; k < out.jumps.size(); ++k) {
      EXPECT(out.jump_layers[k] == 1, "detections belong to the layer pushed");
      jumps_seen.push_back(static_cast<double>(out.jumps[k].step));
    }
    const int64_t n = ring.pop(rows.data(), 16);
    EXPECT(n == 1 + static_cast<int64_t>(out.jumps.size()), "sample + jump records at step %d", step);
    for (int64_t k = 1; k < n; ++k) EXPECT(rows[static_cast<size_t>(k * width)] == rec::kKindJump, "jump record");
  }
  EXPECT(std::count(jumps_seen.begin(), jumps_seen.end(), 300.0) > 0, "the level change at step 300 was found");
  bool threw = false;
  try {
    out.clear();
    finisher.record({0, 0.0, 0.0}, 1, &o.layers, metrics.data(), nullptr, &rows_seen, &ring, out);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  EXPECT(threw, "a layer index outside the finisher's layers is refused");
}

// spectra_batch = 3: the same records as one sample at a time (same bits), emitted only once three
// samples wait, in step order; record() and flush() emit what waits first; a sample that overflows
// the ring takes every later record of the call with it (order kept).
void test_sample_finish_batched(std::mt19937_64& rng) {
  namespace rec = ndt::record;
  std::normal_distribution<float> normal;
  ndt::SampleFinishOptions o;
  o.layers = 3;
  ndt::SampleFinisher single(o);
  o.spectra_batch = 3;
  ndt::SampleFinisher batched(o);
  EXPECT(batched.spectra_batch() == 3 && single.spectra_batch() == 1, "batch in effect");
  const int64_t width = batched.width();
  // Per sample: a 12 x 12 sample-side Gram (layer 0), a 5 x 5 feature-side one (layer 1), layer 2 failed.
  std::vector<float> a(12 * 20), b(12 * 5);
  const ndt::MatrixView va{a.data(), ndt::DType::float32, 12, 20, 20, 1};
  const ndt::MatrixView vb{b.data(), ndt::DType::float32, 12, 5, 5, 1};
  ndt::GramAccumulator ga(12, ndt::GramSide::sample), gb(5, ndt::GramSide::feature);
  ndt::RecordRing ring1(64, width), ring3(64, width);
  std::vector<double> want, got(static_cast<size_t>(64 * width));
  ndt::SampleOutcome out;
  auto one_sample = [&](int64_t step) {
    for (auto& v : a) v = normal(rng);
    for (auto& v : b) v = normal(rng);
    if (step == 4) a[7] = std::numeric_limits<float>::quiet_NaN();  // flags layer 0 of step 4 only
    for (ndt::SampleFinisher* f : {&single, &batched}) {
      ga.add(va);
      gb.add(vb);
      out.clear();
      f->finish({step, 0.5 * static_cast<double>(step), 1.0}, {0, 1}, {&ga, &gb}, {nullptr, nullptr}, {2},
                f == &single ? &ring1 : &ring3, out);
      EXPECT(out.overflow.empty() && out.spectra_error.empty(), "step %lld: nothing left over",
             static_cast<long long>(step));
      EXPECT(ga.rows_seen() == 0 && gb.rows_seen() == 0, "accumulators reset when the sample is taken");
    }
    const int64_t n = ring1.pop(got.data(), 64);
    EXPECT(n == 3, "unbatched: three records at once");
    want.insert(want.end(), got.begin(), got.begin() + n * width);
  };
  std::vector<double> emitted;
  auto take = [&](int64_t expect_records, const char* what) {
    const int64_t n = ring3.pop(got.data(), 64);
    EXPECT(n == expect_records, "%s: %lld records, expected %lld", what, static_cast<long long>(n),
           static_cast<long long>(expect_records));
    emitted.insert(emitted.end(), got.begin(), got.begin() + n * width);
  };
  for (int64_t step = 0; step < 7; ++step) {
    one_sample(step);
    EXPECT(batched.pending() == (step + 1) % 3, "pending after step %lld", static_cast<long long>(step));
    take(batched.pending() == 0 ? 9 : 0, "batched finish");
  }
  // record() of a precomputed sample (step 7) emits the waiting step 6 first.
  std::vector<double> metrics(rec::kMetricWidth, 2.0);
  metrics[rec::kMetricWidth - 1] = 0;
  const int64_t layer = 1, rows_seen = 4;
  for (ndt::SampleFinisher* f : {&single, &batched}) {
    out.clear();
    f->record({7, 0.0, 0.0}, 1, &layer, metrics.data(), nullptr, &rows_seen, f == &single ? &ring1 : &ring3, out);
  }
  const int64_t n = ring1.pop(got.data(), 64);
  want.insert(want.end(), got.begin(), got.begin() + n * width);
  take(4, "record() after one waiting sample");
  EXPECT(batched.pending() == 0, "record() flushed");
  one_sample(8);
  out.clear();
  batched.flush(&ring3, out);
  take(3, "flush()");
  out.clear();
  batched.flush(&ring3, out);
  take(0, "a second flush()");
  EXPECT(emitted.size() == want.size(), "as many records batched (%zu) as unbatched (%zu)", emitted.size(), want.size());
  for (size_t i = 0; i < std::min(emitted.size(), want.size()); ++i) {
    EXPECT(emitted[i] == want[i] || (std::isnan(emitted[i]) && std::isnan(want[i])),
           "record value %zu (step %g): batched %.17g vs unbatched %.17g", i, emitted[(i / width) * width + rec::kStep],
           emitted[i], want[i]);
  }
  int flagged = 0;
  for (size_t r = 0; r < emitted.size() / width; ++r) {
    const double* row = &emitted[r * width];
    if (row[1] < 2 && (static_cast<uint32_t>(row[rec::kExtras + 4]) & ndt::kFlagNonFinite)) {
      ++flagged;
      EXPECT(row[rec::kStep] == 4 && row[1] == 0, "only layer 0 of step 4 is non-finite, not step %g layer %g",
             row[rec::kStep], row[1]);
    }
  }
  EXPECT(flagged == 1, "one non-finite row, got %d", flagged);

  // Overflow keeps the order: a ring with room for 3 records; samples of 2, 2 and 1 records.
  o.layers = 2;
  o.spectra_batch = 3;
  ndt::SampleFinisher small(o);
  ndt::RecordRing tiny(3, width);
  out.clear();
  for (int64_t step = 0; step < 3; ++step) {
    for (auto& v : a) v = normal(rng);
    for (auto& v : b) v = normal(rng);
    ga.add(va);
    gb.add(vb);
    if (step < 2) small.finish({step, 0.0, 0.0}, {0, 1}, {&ga, &gb}, {nullptr, nullptr}, {}, &tiny, out);
    else small.finish({step, 0.0, 0.0}, {0}, {&ga}, {nullptr}, {}, &tiny, out);
    gb.reset();
  }
  EXPECT(tiny.pop(got.data(), 3) == 2 && got[rec::kStep] == 0, "the first sample in the ring");
  EXPECT(out.overflow.size() == static_cast<size_t>(3 * width) && out.overflow[rec::kStep] == 1 &&
             out.overflow[width + rec::kStep] == 1 && out.overflow[2 * width + rec::kStep] == 2,
         "the second sample overflowed and the third (which would fit) follows it there");

  bool threw = false;
  try {
    ndt::SampleFinishOptions bad;
    bad.spectra_batch = 0;
    ndt::SampleFinisher refused(bad);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  EXPECT(threw, "spectra_batch 0 is refused");
  ndt::SampleFinishOptions trace_only;
  trace_only.spectra_batch = 4;
  trace_only.activations.metrics = ndt::kParticipationRatioEig;
  EXPECT(ndt::SampleFinisher(trace_only).spectra_batch() == 1, "nothing to batch without spectrum metrics");
}

// The batched solver under each lane kernel: every matrix of a mixed batch (sizes 1…130; Grams of
// random, ReLU, rank-1, zero and graded data; a clustered spectrum; one NaN matrix) against the
// single-matrix solver to 1e-12·max|λ|; NaN flags its own matrix only; a matrix gets the same bits
// alone as in the batch.
void test_batched_eigenvalues(std::mt19937_64& rng) {
  std::vector<std::vector<double>> mats;
  std::vector<int64_t> dims;
  int kind = 0;
  for (int64_t n : {64, 1, 10, 64, 2, 3, 40, 97, 130, 64, 5, 33}) {
    Matrix x = random_matrix(rng, n / 2 + 1, n, kind % 4);  // rank ≤ n/2 + 1: rank-deficient
    if (kind % 6 == 4)  // graded: column j scaled by 10^(−6j/n), eigenvalues down to ~1e-12
      for (int64_t i = 0; i < x.rows; ++i)
        for (int64_t j = 0; j < n; ++j) x.values[static_cast<size_t>(i * n + j)] *= std::pow(10.0, -6.0 * j / n);
    std::vector<double> a = reference_gram(x, ndt::GramSide::feature);
    if (kind % 6 == 5)  // clustered: 5I + 11ᵀ
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j) a[static_cast<size_t>(i * n + j)] = (i == j ? 5.0 : 0.0) + 1.0;
    mats.push_back(a);
    dims.push_back(n);
    ++kind;
  }
  const size_t bad = 3;  // a NaN in the upper triangle of one 64 × 64
  mats[bad][5] = std::numeric_limits<double>::quiet_NaN();
  const auto count = static_cast<int64_t>(mats.size());
  for (ndt::LaneKernel kernel : {ndt::LaneKernel::portable, ndt::LaneKernel::avx2}) {
    if (!ndt::lane_kernel_available(kernel)) continue;
    ndt::set_lane_kernel(kernel);
    EXPECT(ndt::lane_kernel() == kernel, "kernel %d not selected", static_cast<int>(kernel));
    std::vector<std::vector<double>> w;
    std::vector<const double*> a;
    std::vector<double*> wp;
    for (size_t k = 0; k < mats.size(); ++k) {
      w.emplace_back(static_cast<size_t>(dims[k]));
      a.push_back(mats[k].data());
      wp.push_back(w.back().data());
    }
    std::unique_ptr<bool[]> ok(new bool[mats.size()]);
    ndt::symmetric_eigenvalues_batched(a.data(), dims.data(), wp.data(), count, ok.get());
    for (size_t k = 0; k < mats.size(); ++k) {
      const int64_t n = dims[k];
      if (k == bad) {
        EXPECT(!ok[k] && std::all_of(w[k].begin(), w[k].end(), [](double v) { return std::isnan(v); }),
               "kernel %d: the NaN matrix must be flagged and NaN", static_cast<int>(kernel));
        continue;
      }
      EXPECT(ok[k], "kernel %d matrix %zu (n=%lld) flagged", static_cast<int>(kernel), k, static_cast<long long>(n));
      std::vector<double> work = mats[k], ref(static_cast<size_t>(n));
      ndt::symmetric_eigenvalues(work.data(), n, ref.data(), ndt::EigenSolver::tridiagonal_ql);
      const double scale = std::max(std::fabs(ref.front()), std::fabs(ref.back()));
      for (int64_t i = 0; i < n; ++i)
        EXPECT(std::fabs(w[k][static_cast<size_t>(i)] - ref[static_cast<size_t>(i)]) <= 1e-12 * scale,
               "kernel %d matrix %zu (n=%lld) λ[%lld] %.17g vs single %.17g", static_cast<int>(kernel), k,
               static_cast<long long>(n), static_cast<long long>(i), w[k][static_cast<size_t>(i)],
               ref[static_cast<size_t>(i)]);
      std::vector<double> alone(static_cast<size_t>(n));
      const double* ak = mats[k].data();
      double* alone_ptr = alone.data();
      bool alone_ok = false;
      ndt::symmetric_eigenvalues_batched(&ak, &n, &alone_ptr, 1, &alone_ok);
      EXPECT(alone_ok && alone == w[k], "kernel %d matrix %zu: alone differs from in the batch",
             static_cast<int>(kernel), k);
    }
  }
  ndt::set_lane_kernel(ndt::LaneKernel::automatic);
}

// The background worker: one job at a time, on another thread; its exception comes back from
// take(); take() waits; stop() waits for the job in flight; a stopped worker starts again.
void test_worker_thread() {
  ndt::WorkerThread worker("ndt-test");
  bool refused = false;
  try {
    worker.submit([] {});
  } catch (const std::logic_error&) {
    refused = true;
  }
  EXPECT(refused, "submit before start() must be refused");
  EXPECT(!worker.in_flight() && !worker.done() && worker.take() == nullptr, "nothing in flight at first");
  worker.start();
  worker.start();  // (once)
  const std::thread::id caller = std::this_thread::get_id();
  std::thread::id ran_on;
  std::atomic<bool> release{false};
  worker.submit([&] {
    ran_on = std::this_thread::get_id();
    while (!release.load()) std::this_thread::sleep_for(std::chrono::microseconds(50));
  });
  EXPECT(worker.in_flight() && !worker.done(), "a held job is in flight, not done");
  refused = false;
  try {
    worker.submit([] {});
  } catch (const std::logic_error&) {
    refused = true;
  }
  EXPECT(refused, "a second job while one is in flight must be refused");
  release = true;
  EXPECT(worker.take() == nullptr, "a job that returns gives no error");
  EXPECT(ran_on != caller && ran_on != std::thread::id(), "the job ran on the worker thread");
  EXPECT(!worker.in_flight(), "take() clears the job");
  worker.submit([] { throw std::invalid_argument("bad sample"); });
  std::exception_ptr error = worker.take();
  std::string what;
  try {
    if (error) std::rethrow_exception(error);
  } catch (const std::invalid_argument& e) {
    what = e.what();
  }
  EXPECT(what == "bad sample", "the job's exception comes back from take(), got '%s'", what.c_str());
  int count = 0;
  for (int i = 0; i < 200; ++i) {  // many short jobs: no lost wake-up
    worker.submit([&] { ++count; });
    EXPECT(worker.take() == nullptr, "job %d", i);
  }
  EXPECT(count == 200, "every job ran once, got %d", count);
  std::atomic<bool> finished{false};
  worker.submit([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    finished = true;
  });
  worker.stop();
  EXPECT(finished.load() && !worker.in_flight(), "stop() waits for the job in flight");
  worker.start();
  worker.submit([&] { count = -1; });
  worker.take();
  EXPECT(count == -1, "a stopped worker runs jobs again after start()");

  // fork() with a job in flight: the child has no such thread. There nothing is in flight,
  // take() and stop() return at once, and a new job gets a thread of the child's own.
  release = false;
  worker.submit([&] {
    while (!release.load()) std::this_thread::sleep_for(std::chrono::microseconds(50));
  });
  const pid_t child = fork();
  if (child == 0) {
    int bad = 0;
    bad |= worker.in_flight() ? 1 : 0;
    bad |= worker.take() != nullptr ? 2 : 0;
    int ran = 0;
    worker.submit([&] { ran = 1; });
    bad |= worker.take() != nullptr || ran != 1 ? 4 : 0;
    worker.stop();
    _exit(bad);
  }
  int status = -1;
  EXPECT(child > 0 && waitpid(child, &status, 0) == child, "fork/waitpid");
  EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the forked child's worker: status %d", status);
  EXPECT(worker.in_flight(), "the parent's job is still in flight after the fork");
  release = true;
  EXPECT(worker.take() == nullptr, "the parent's job ends normally");
}

int main() {
  const char* env = std::getenv("NDT_TEST_SEED");
  g_seed = env ? std::strtoull(env, nullptr, 10) : std::random_device{}();
  std::printf("test_core: seed %llu (set NDT_TEST_SEED to reproduce)\n", static_cast<unsigned long long>(g_seed));
  std::mt19937_64 rng(g_seed);
  test_gram_all_dtypes_layouts(rng);
  test_accumulator(rng);
  test_eigenvalues(rng);
  test_batched_eigenvalues(rng);
  test_largest_eigenvalue(rng);
  test_metrics(rng);
  test_batched_parallel(rng);
  test_thread_budget();
  test_record_ring(rng);
  test_jump_bank(rng);
  test_sample_finish(rng);
  test_sample_finish_batched(rng);
  test_worker_thread();
  std::printf("test_core: %s (%d failures)\n", g_failures ? "FAILED" : "ok", g_failures);
  return g_failures ? 1 : 0;
}
