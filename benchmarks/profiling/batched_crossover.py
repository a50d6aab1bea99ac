"""Batched lane kernels against LAPACK dsyevd for n = 96…256, one matrix and four (one thread).

Best-of-15 µs of ``symmetric_eigenvalues(…, solver="own")`` and ``solver="lapack"`` on Grams of
standard-normal (n, 2n) matrices: the figures behind the batched solver's automatic choice
(benchmarks/NOTES.md, "Batched eigensolver").
"""

import numpy as np, time
from threadpoolctl import threadpool_limits
from ndt_fast._native import core
import ndt_fast
threadpool_limits(1)
rng = np.random.default_rng(0)
def best(f, reps=15):
    t=[]
    for _ in range(reps):
        t0=time.perf_counter(); f(); t.append(time.perf_counter()-t0)
    return min(t)*1e6
for n in [96, 128, 160, 192, 256]:
    x = rng.standard_normal((n, 2*n)); a = x @ x.T
    one_own = best(lambda: ndt_fast.symmetric_eigenvalues(a, solver="own"))
    one_lap = best(lambda: ndt_fast.symmetric_eigenvalues(a, solver="lapack"))
    four = np.stack([a]*4)
    four_own = best(lambda: ndt_fast.symmetric_eigenvalues(four, solver="own"))
    four_lap = best(lambda: ndt_fast.symmetric_eigenvalues(four, solver="lapack"))
    print(f"n={n}: one matrix own {one_own:.0f} lapack {one_lap:.0f} | four own {four_own:.0f} lapack {four_lap:.0f} µs")
