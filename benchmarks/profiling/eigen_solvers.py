"""Best-of-N timings of the eigensolvers (see benchmarks/NOTES.md, "Own symmetric eigensolver")."""

import time

import numpy as np
import torch

from ndt_fast._native import core


def best_us(fn, repeats=200):
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e6


def main():
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    print(f"{'n':>5} {'own':>8} {'own, tridiagonal input':>23} {'lapack':>8} {'torch f32':>10}  (µs)")
    for n in (10, 32, 64, 96, 128, 256):
        a = rng.standard_normal((n, n))
        a = a + a.T
        tri = np.diag(rng.standard_normal(n)) + np.diag(rng.standard_normal(n - 1), 1) + np.diag(rng.standard_normal(n - 1), -1)
        t32 = torch.from_numpy(a.astype(np.float32))
        print(f"{n:>5} {best_us(lambda: core.symmetric_eigenvalues(a, 'own')):>8.0f} "
              f"{best_us(lambda: core.symmetric_eigenvalues(tri, 'own')):>23.0f} "
              f"{best_us(lambda: core.symmetric_eigenvalues(a, 'lapack')):>8.0f} "
              f"{best_us(lambda: torch.linalg.eigvalsh(t32)):>10.0f}")


if __name__ == "__main__":
    main()
