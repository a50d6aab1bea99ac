"""CUDA kernels of ndt_fast against torch.matmul + torch.linalg.eigvalsh on the same GPU.

NEVER RUN: written in a session without a GPU; every benchmark here skips, with the reason,
where the CUDA path is unavailable. Each timed call ends with torch.cuda.synchronize(), so a row
is the wall time of the GPU work plus launch overhead (what a training step pays when it waits).

Groups (one per shape; the baseline sits in the same group, as everywhere in benchmarks/):
* gram: G = XᵀX of bf16 token activations (8·1024 tokens × d), ndt_fast (cuBLAS GemmEx, float32
  Gram) vs torch ``x.T @ x`` (bf16 Gram) and ``x.float().T @ x.float()`` (float32 Gram).
* spectra: eigenvalues + metrics of 12 Grams d × d (GPT-2-small, every block tracked), ndt_fast
  (cuSOLVER syevd, float64) vs ``torch.linalg.eigvalsh`` of the stacked Grams (float32, float64).
* mlp: the reference MLP's three layers at batch 64 (sample-side Grams 64, 64, 10): ndt_fast's
  whole device_metrics (Gram + own Jacobi + metrics) vs torch matmul + eigvalsh.
"""

from __future__ import annotations

import pytest
import torch

import ndt_fast.cuda as nc

_INFO = nc.availability()
pytestmark = pytest.mark.skipif(
    not _INFO["available"], reason=f"needs a GPU and a CUDA build of ndt_fast: {_INFO['reason']}"
)


def _timed(measure, fn):
    def run():
        out = fn()
        torch.cuda.synchronize()
        return out

    return measure(run)


def _info(benchmark, group: str, label: str, role: str, **extra) -> None:
    benchmark.group = group
    benchmark.extra_info.update(label=label, role=role, device=torch.cuda.get_device_name(), **extra)


@pytest.mark.parametrize("d", [768, 2048])
@pytest.mark.parametrize("impl", ["ndt_fast", "torch-bf16", "torch-float32"])
def test_gram_bf16_tokens(benchmark, measure, d, impl):
    x = torch.randn(8 * 1024, d, device="cuda", dtype=torch.bfloat16)
    labels = {"ndt_fast": ("ndt_fast gram_update (GemmEx, fp32 out)", "subject"),
              "torch-bf16": ("x.T @ x (bf16)", "baseline"),
              "torch-float32": ("x.float().T @ x.float()", "baseline")}
    _info(benchmark, f"cuda gram bf16 8192x{d}", *labels[impl], d=d)
    if impl == "ndt_fast":
        ctx = nc._context(x.device.index)
        gram = torch.empty((d, d), dtype=torch.float32, device="cuda")
        _, view = nc._device_matrix(x, "bench")
        stream = nc._stream(x.device)
        _timed(measure, lambda: nc._native.gram_update(ctx, view, side="feature", gram=gram.data_ptr(), beta=0.0,
                                                       stream=stream))
    elif impl == "torch-bf16":
        _timed(measure, lambda: x.T @ x)
    else:
        _timed(measure, lambda: x.float().T @ x.float())


@pytest.mark.parametrize("d", [768])
@pytest.mark.parametrize("impl", ["ndt_fast", "torch-eigvalsh-float32", "torch-eigvalsh-float64"])
def test_spectra_12_layers(benchmark, measure, d, impl):
    if impl == "ndt_fast" and not _INFO["cusolver"]:
        pytest.skip("cuSOLVER not loaded: Grams wider than 64 need it")
    xs = [torch.randn(4 * d, d, device="cuda") for _ in range(12)]
    grams = torch.stack([x.T @ x for x in xs])
    labels = {"ndt_fast": ("SpectraPlan.run (syevd fp64 + metrics)", "subject"),
              "torch-eigvalsh-float32": ("torch.linalg.eigvalsh(G) fp32", "baseline"),
              "torch-eigvalsh-float64": ("torch.linalg.eigvalsh(G.double())", "baseline")}
    _info(benchmark, f"cuda spectra 12x{d}", *labels[impl], d=d)
    if impl == "ndt_fast":
        ctx = nc._context(0)
        plan = nc._plan(ctx, (d,) * 12, 1e-10, 0.9, nc.metric_mask(None), "auto")
        workspace = torch.empty(plan.workspace_bytes, dtype=torch.uint8, device="cuda")
        records = torch.empty((12, nc.RECORD_WIDTH), dtype=torch.float64, device="cuda")
        stream = nc._stream(grams.device)
        ptrs = [g.data_ptr() for g in grams]
        _timed(measure, lambda: plan.run(ctx, ptrs, workspace=workspace.data_ptr(), records=records.data_ptr(),
                                         stream=stream))
    elif impl == "torch-eigvalsh-float32":
        _timed(measure, lambda: torch.linalg.eigvalsh(grams))
    else:
        g64 = grams.double()
        _timed(measure, lambda: torch.linalg.eigvalsh(g64))


@pytest.mark.parametrize("impl", ["ndt_fast", "ndt_fast-cusolver", "torch"])
def test_mlp_batch64_metrics(benchmark, measure, impl):
    xs = [torch.randn(64, 256, device="cuda").relu(), torch.randn(64, 128, device="cuda").relu(),
          torch.randn(64, 10, device="cuda")]
    labels = {"ndt_fast": ("device_metrics (own Jacobi)", "subject"),
              "ndt_fast-cusolver": ('device_metrics(solver="cusolver")', "variant"),
              "torch": ("eigvalsh(x @ x.T) per layer", "baseline")}
    _info(benchmark, "cuda metrics mlp 784-256-128-10 batch 64", *labels[impl])
    if impl == "ndt_fast":
        _timed(measure, lambda: nc.device_metrics(xs))
    elif impl == "ndt_fast-cusolver":
        if not _INFO["cusolver"]:
            pytest.skip("cuSOLVER not loaded")
        _timed(measure, lambda: nc.device_metrics(xs, solver="cusolver"))
    else:
        _timed(measure, lambda: [torch.linalg.eigvalsh(x @ x.T if x.shape[0] < x.shape[1] else x.T @ x) for x in xs])
