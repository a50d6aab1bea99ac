"""Gram updates of the native core (csrc/cpu/gram_cpu.cpp) through ``ndt_fast._native.core``.

``core.gram`` runs either the production path (registered BLAS syrk, zero-copy where the layout
allows, else converted blocks) or the core's own reference kernel; both are checked against numpy's
float64 product with a tolerance derived from the classical dot-product error bound
|fl(aᵀb) − aᵀb| ≤ k·u·|a|ᵀ|b| (k terms, unit round-off u of the accumulation dtype).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from checks import assert_metrics_match
from matrices import make_matrix
from ndt_fast._buffer import describe
from ndt_fast._native import core
from reference import center_columns, reference_metrics, to_float64

UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24}
ALL_METRICS_MASK = sum(core.METRIC_BITS.values())


def exact_gram(x64: np.ndarray, side: str) -> np.ndarray:
    return x64.T @ x64 if side == "feature" else x64 @ x64.T


def assert_gram_close(got: np.ndarray, x, side: str, accumulate: str, context: str, centered: bool = False) -> None:
    """|got − XᵀX| ≤ (k + 4)·u·(|X|ᵀ|X|) elementwise (+ the centring term's own bound)."""
    x64 = to_float64(x)
    a = np.abs(x64)
    k = x64.shape[0] if side == "feature" else x64.shape[1]
    bound = exact_gram(a, side)
    if centered:
        mean_abs = np.abs(x64.mean(axis=0, keepdims=True))
        bound = bound + exact_gram(np.broadcast_to(mean_abs, x64.shape), side) * 3
        x64 = center_columns(x64)
    want = exact_gram(x64, side)
    assert got.shape == want.shape, context
    tol = 2 * (k + 4) * UNIT_ROUNDOFF[accumulate] * bound
    err = np.abs(got - want)
    worst = np.unravel_index(np.argmax(err - tol), err.shape)
    assert np.all(err <= tol), (
        f"{context}: |err| {err[worst]:.3g} > tol {tol[worst]:.3g} at {worst} (got {got[worst]!r}, want {want[worst]!r})"
    )


def make_input(kind: str, dtype: str, rng: np.random.Generator, shape: tuple[int, int]):
    """A matrix with the given dtype and layout kind (values ~ N(0, 1))."""
    n, d = shape
    if kind == "hankel":
        # overlapping rows, both strides 1 element: x[i, j] = buf[i + j]
        storage = "float32" if dtype == "bfloat16" else dtype
        buf = rng.standard_normal(n + d - 1).astype(storage)
        x = np.lib.stride_tricks.as_strided(buf, (n, d), (buf.itemsize, buf.itemsize), writeable=False)
        if dtype == "bfloat16":
            # torch has no overlapping-view constructor from numpy; as_strided on a tensor does it
            t = torch.from_numpy(buf).to(torch.bfloat16)
            return t.as_strided((n, d), (1, 1))
        return x
    base_shape = {"contiguous": (n, d), "transposed": (d, n), "column_slice": (n, 2 * d), "negative_rows": (n, d),
                  "fortran": (n, d), "padded": (n + 1, d + 3)}[kind]
    base = rng.standard_normal(base_shape)
    if dtype == "bfloat16":
        t = torch.from_numpy(base).to(torch.bfloat16)
        return {
            "contiguous": lambda: t,
            "transposed": lambda: t.t(),
            "column_slice": lambda: t[:, ::2],
            "negative_rows": lambda: t.flip(0),
            "fortran": lambda: t.t().contiguous().t(),
            "padded": lambda: t[1:, 2 : 2 + d],
        }[kind]()
    a = base.astype(dtype)
    return {
        "contiguous": lambda: a,
        "transposed": lambda: a.T,
        "column_slice": lambda: a[:, ::2],
        "negative_rows": lambda: a[::-1],
        "fortran": lambda: np.asfortranarray(a),
        "padded": lambda: a[1:, 2 : 2 + d],
    }[kind]()


LAYOUTS = ["contiguous", "transposed", "column_slice", "negative_rows", "fortran", "padded", "hankel"]
DTYPES = ["float32", "float64", "float16", "bfloat16"]
# (n, d): block-size crossings (kBlock = 256 rows / columns per converted block), 1-wide, odd sizes.
SHAPES = [(1, 1), (1, 9), (9, 1), (37, 23), (5, 130), (300, 20), (10, 600), (64, 256)]


@pytest.mark.parametrize("shape", SHAPES, ids=[f"{n}x{d}" for n, d in SHAPES])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_gram_paths_match_numpy(dtype, layout, shape, rng, seed):
    x = make_input(layout, dtype, rng, shape)
    assert tuple(x.shape) == shape
    owner, view = describe(x)
    for side in ("feature", "sample"):
        for accumulate in ("float64", "float32"):
            for reference in (False, True):
                g = core.gram(view, side=side, accumulate=accumulate, reference=reference)
                context = f"{dtype} {layout} {shape} side={side} acc={accumulate} reference={reference} seed={seed}"
                np.testing.assert_array_equal(g, g.T, err_msg=context)
                assert_gram_close(g, x, side, accumulate, context)
    del owner


def test_gram_float64_accumulation_is_float64(rng, seed):
    # A column pair whose Gram entry needs more than float32's 24 bits.
    x = np.array([[1.0, 1.0], [1e-5, -1e-5]], dtype=np.float64)
    _, view = describe(x)
    for reference in (False, True):
        g = core.gram(view, side="feature", accumulate="float64", reference=reference)
        assert g[0, 1] == 1.0 - 1e-10, g
        g32 = core.gram(view, side="feature", accumulate="float32", reference=reference)
        assert g32[0, 1] == 1.0, g32  # 1 − 1e-10 rounds to 1 in float32


@pytest.mark.parametrize("bad", [{"side": "both"}, {"accumulate": "float16"}])
def test_gram_bad_options_are_value_errors(bad, rng):
    _, view = describe(make_matrix("gaussian", rng))
    kwargs = dict(side="feature", accumulate="float64", reference=False) | bad
    with pytest.raises(ValueError, match=next(iter(bad))):
        core.gram(view, **kwargs)


def test_bad_view_tuples_are_value_errors(rng):
    x = make_matrix("gaussian", rng)
    owner, (ptr, code, n, d, rs, cs) = describe(x)
    with pytest.raises(ValueError, match="dtype"):
        core.gram((ptr, 7, n, d, rs, cs), side="feature", accumulate="float64", reference=False)
    with pytest.raises(ValueError):
        core.gram((ptr, code, 0, d, rs, cs), side="feature", accumulate="float64", reference=False)
    with pytest.raises(ValueError):
        core.gram((0, code, n, d, rs, cs), side="feature", accumulate="float64", reference=False)
    del owner


# ---------------------------------------------------------------------------------------------
# GramAccumulator


def batches_of(rng: np.random.Generator, d: int, rows: list[int]):
    """Batches of varying row counts, cycling through dtypes and layouts."""
    out = []
    for i, n in enumerate(rows):
        b = rng.standard_normal((n, d)) + 0.3
        choice = i % 5
        if choice == 0:
            out.append(b.astype(np.float32))
        elif choice == 1:
            out.append(np.asfortranarray(b))
        elif choice == 2:
            out.append(torch.from_numpy(b).to(torch.bfloat16))
        elif choice == 3:
            out.append(b.astype(np.float16)[::-1])
        else:
            out.append(torch.from_numpy(b.T.copy()).float().t())
    return out


@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("accumulate", ["float64", "float32"])
@pytest.mark.parametrize("d", [1, 24, 300])
def test_feature_accumulator_equals_gram_of_stacked_batches(d, accumulate, center, rng, seed):
    rows = [1, 7, 33, 64, 2, 270, 5]
    batches = batches_of(rng, d, rows)
    acc = core.GramAccumulator(d, "feature", accumulate, center=center)
    assert (acc.dim, acc.rows_seen, acc.batches, acc.centered) == (d, 0, 0, center)
    for b in batches:
        owner, view = describe(b)
        acc.add(view)
        del owner
    assert acc.rows_seen == sum(rows) and acc.batches == len(rows)
    stacked = np.concatenate([to_float64(b) for b in batches])
    context = f"d={d} acc={accumulate} center={center} seed={seed}"
    assert_gram_close(acc.gram(), stacked, "feature", accumulate, context, centered=center)
    assert_gram_close(acc.gram(), stacked, "feature", accumulate, context, centered=center)  # gram() does not consume
    np.testing.assert_allclose(acc.uncentered_trace, float(np.sum(stacked**2)),
                               rtol=1e-10 if accumulate == "float64" else 1e-5, err_msg=context)


@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("accumulate", ["float64", "float32"])
def test_sample_accumulator_holds_one_batch(accumulate, center, rng, seed):
    x = make_matrix("wide", rng)
    acc = core.GramAccumulator(x.shape[0], side="sample", accumulate=accumulate, center=center)
    owner, view = describe(x)
    acc.add(view)
    context = f"sample side acc={accumulate} center={center} seed={seed}"
    assert_gram_close(acc.gram(), x, "sample", accumulate, context, centered=center)
    if center:
        return
    with pytest.raises(ValueError, match="reset"):
        acc.add(view)
    assert acc.batches == 1 and acc.rows_seen == x.shape[0]
    assert_gram_close(acc.gram(), x, "sample", accumulate, context + " after refused add")
    acc.reset()
    y = make_matrix("wide", rng)
    owner_y, view_y = describe(y)
    acc.add(view_y)
    assert_gram_close(acc.gram(), y, "sample", accumulate, context + " after reset")


def test_accumulator_wrong_dims_are_value_errors(rng):
    feature = core.GramAccumulator(8)
    sample = core.GramAccumulator(8, "sample")
    owner, view = describe(rng.standard_normal((8, 9)).astype(np.float32))
    with pytest.raises(ValueError, match="cols == 8"):
        feature.add(view)
    owner2, view2 = describe(rng.standard_normal((9, 8)).astype(np.float32))
    with pytest.raises(ValueError, match="rows == 8"):
        sample.add(view2)
    assert feature.rows_seen == 0 and feature.batches == 0 and not feature.gram().any()
    assert sample.rows_seen == 0 and sample.batches == 0 and not sample.gram().any()
    # the failed adds left both usable
    feature.add(view2)
    sample.add(view)
    assert feature.batches == 1 and sample.batches == 1


@pytest.mark.parametrize(("args", "match"), [((0,), "dim"), ((-3,), "dim"), ((4, "rows"), "side"),
                                             ((4, "feature", "float16"), "accumulate")])
def test_accumulator_bad_construction_is_value_error(args, match):
    with pytest.raises(ValueError, match=match):
        core.GramAccumulator(*args)


@pytest.mark.parametrize("center", [False, True])
def test_accumulator_reset(center, rng, seed):
    acc = core.GramAccumulator(6, center=center)
    first = rng.standard_normal((10, 6)) + 5.0
    owner, view = describe(first)
    acc.add(view)
    acc.add(view)
    acc.reset()
    assert acc.rows_seen == 0 and acc.batches == 0
    np.testing.assert_array_equal(acc.gram(), np.zeros((6, 6)))
    second = rng.standard_normal((4, 6))
    owner2, view2 = describe(second)
    acc.add(view2)
    # no trace of the first batch: neither in the Gram nor in the shift/sums used for centring
    assert_gram_close(acc.gram(), second, "feature", "float64", f"after reset center={center}, seed={seed}",
                      centered=center)


def test_accumulator_center_must_match_metric_request(rng):
    acc = core.GramAccumulator(5)
    acc.add(describe(rng.standard_normal((9, 5)))[1])
    with pytest.raises(ValueError, match="center"):
        metrics_of([acc], center=True)


def metrics_of(accs, *, center=False, eps=1e-10, threshold=0.9, solver="auto"):
    out = core.metrics_of_accumulators(accs, eps=eps, energy_threshold=threshold, center=center,
                                       metrics=ALL_METRICS_MASK, solver=solver)
    return [dict(zip(core.RECORD_COLUMNS, row)) for row in out]


@pytest.mark.parametrize("solver", ["auto", "own", "lapack"])
@pytest.mark.parametrize("center", [False, True])
def test_metrics_of_accumulators_match_reference_of_stacked(center, solver, rng, seed):
    accs, stacked = [], []
    for d, rows in [(16, [3, 40, 9]), (130, [64, 64, 64]), (48, [200]), (5, [1, 1, 1])]:
        batches = batches_of(rng, d, rows)
        acc = core.GramAccumulator(d, center=center)
        for b in batches:
            owner, view = describe(b)
            acc.add(view)
        accs.append(acc)
        stacked.append(np.concatenate([to_float64(b) for b in batches]))
    wide = make_matrix("wide", rng)
    sample = core.GramAccumulator(wide.shape[0], "sample", center=center)
    sample.add(describe(wide)[1])
    accs.append(sample)
    stacked.append(to_float64(wide))

    records = metrics_of(accs, center=center, solver=solver)
    assert len(records) == len(accs)
    for i, (rec, x) in enumerate(zip(records, stacked)):
        ref = reference_metrics(x, center=center)
        assert_metrics_match(rec, ref, f"accumulator {i} {x.shape}, center={center}, solver={solver}, seed={seed}")
        assert rec["flags"] == 0


def test_float32_accumulation_metrics_are_close(rng, seed):
    # float32 accumulation trades ~1e-7 relative Gram error for speed; metrics stay within 1e-4.
    x = make_matrix("relu_gaussian", rng)
    acc = core.GramAccumulator(x.shape[1], "feature", "float32")
    for part in np.array_split(x, 5):
        acc.add(describe(part)[1])
    (rec,) = metrics_of([acc])
    assert_metrics_match(rec, reference_metrics(x), f"float32 accumulation, seed={seed}", rtol=1e-4, knife_edge=1e-5)


def test_metrics_of_empty_accumulator_is_value_error():
    with pytest.raises(ValueError, match="empty"):
        metrics_of([core.GramAccumulator(4)])


def test_metrics_of_zero_and_non_finite_accumulators():
    zero = core.GramAccumulator(5)
    zero.add(describe(np.zeros((3, 5), np.float32))[1])
    bad = core.GramAccumulator(5)
    x = np.ones((3, 5), np.float32)
    x[1, 1] = np.nan
    bad.add(describe(x)[1])
    rz, rb = metrics_of([zero, bad])
    assert all(rz[name] == 0.0 for name in core.METRIC_BITS) and int(rz["flags"]) & core.FLAG_ZERO
    assert all(np.isnan(rb[name]) for name in core.METRIC_BITS) and int(rb["flags"]) & core.FLAG_NON_FINITE
