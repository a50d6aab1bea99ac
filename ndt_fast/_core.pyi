"""Type stub of the compiled extension ndt_fast._core (csrc/python/bindings.cpp). Private API.

A view tuple describes a strided 2-D buffer: (data_pointer, dtype_code, rows, cols, row_stride,
col_stride), strides in elements, dtype codes 0 float32, 1 float64, 2 float16, 3 bfloat16.
Records are float64 arrays (n, 9) with the columns of RECORD_COLUMNS.
"""

import numpy as np
import numpy.typing as npt

ViewTuple = tuple[int, int, int, int, int, int]

# The record schema (csrc/include/ndt/record_schema.h); ndt_fast._schema derives everything from these.
RECORD_COLUMNS: tuple[str, ...]  # a metric record (one matrix)
RECORD_HEADER: tuple[str, ...]  # (kind, layer) before a sample's or a jump's columns
SAMPLE_COLUMNS: tuple[str, ...]  # a layer's table
WEIGHT_COLUMNS: tuple[str, ...]  # after SAMPLE_COLUMNS with track_weights
JUMP_COLUMNS: tuple[str, ...]
KIND_SAMPLE: int
KIND_JUMP: int
FLAG_TRACKER_ERROR: int
METRIC_BITS: dict[str, int]
FLAG_NON_FINITE: int
FLAG_ZERO: int
FLAG_NOT_CONVERGED: int
OWN_SOLVER_MAX_DIM: int

def register_linalg(blas_capi: dict[str, object] | None, lapack_capi: dict[str, object] | None) -> None: ...
def linalg_status() -> dict[str, bool]: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def metrics(
    views: list[ViewTuple],
    *,
    eps: float,
    energy_threshold: float,
    center: bool,
    metrics: int,
    solver: str,
    threads: int = 0,
) -> npt.NDArray[np.float64]: ...
def gram_eigenvalues(view: ViewTuple, *, center: bool, solver: str) -> npt.NDArray[np.float64]: ...
def symmetric_eigenvalues(a: npt.ArrayLike, solver: str = "auto") -> npt.NDArray[np.float64]: ...
# ---- batched symmetric eigenvalues (issue 14) ----
BATCHED_SOLVER_MAX_DIM: int

def symmetric_eigenvalues_batched(
    matrices: list[npt.NDArray[np.float64]], solver: str = "auto"
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]: ...
def set_lane_kernel(name: str) -> None: ...
def lane_kernel() -> str: ...
def lane_kernel_available(name: str) -> bool: ...

# ---- end of batched symmetric eigenvalues ----
def metrics_from_spectrum(
    lambda_: npt.ArrayLike, *, eps: float, energy_threshold: float, metrics: int
) -> npt.NDArray[np.float64]: ...
def gram(view: ViewTuple, *, side: str, accumulate: str, reference: bool) -> npt.NDArray[np.float64]: ...

class GramAccumulator:
    def __init__(self, dim: int, side: str = "feature", accumulate: str = "float64", center: bool = False) -> None: ...
    def add(self, view: ViewTuple, *, threads: int = 0) -> None: ...
    def refill(self, view: ViewTuple, threads: int) -> None:
        """reset() then add(view) in one call."""
    def reset(self) -> None: ...
    @property
    def dim(self) -> int: ...
    @property
    def side(self) -> str: ...
    @property
    def rows_seen(self) -> int: ...
    @property
    def batches(self) -> int: ...
    @property
    def centered(self) -> bool: ...
    @property
    def uncentered_trace(self) -> float: ...
    def gram(self) -> npt.NDArray[np.float64]: ...
    def lower_triangle(self) -> npt.NDArray[np.float64]:
        """The raw Gram's lower triangle, row by row: dim·(dim+1)/2 float64."""
    def load_lower_triangle(self, values: npt.NDArray[np.float64], rows_seen: int) -> None:
        """Replace the Gram by ``values`` (a lower triangle) and rows_seen; ValueError for a centred one."""

def metrics_of_accumulators(
    accumulators: list[GramAccumulator],
    *,
    eps: float,
    energy_threshold: float,
    center: bool,
    metrics: int,
    solver: str,
    threads: int = 0,
) -> npt.NDArray[np.float64]: ...

class RecordRing:
    """Bounded ring of fixed-width float64 records (thread-safe)."""

    def __init__(self, capacity: int, width: int) -> None: ...
    def push(self, rows: npt.ArrayLike) -> bool: ...
    def pop(self, max_count: int) -> npt.NDArray[np.float64]: ...
    def peek(self) -> npt.NDArray[np.float64]: ...
    def __len__(self) -> int: ...
    @property
    def capacity(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def total_pushed(self) -> int: ...

JUMP_EVENT_COLUMNS: tuple[str, ...]

class JumpBank:
    """Online jump detection over `series` series, one sample of each per push (csrc/include/ndt/jumps.h).

    Runs ndt's rule (ndt_* parameters, as JumpDetector.detect_indices) and the default rule
    (validity.default_rule_indices) on every series; events are float64 rows (k, 7) of
    JUMP_EVENT_COLUMNS: series, rule (0 ndt, 1 default), index (sample index, non-finite pushes
    counted), step (the training step pushed with that sample), z (ndt: |z|; default: signed),
    before, after. Bad parameters or shapes: ValueError. Thread-safe.
    """

    def __init__(
        self,
        series: int,
        *,
        ndt_window: int = 50,
        ndt_z_threshold: float = 3.0,
        ndt_min_samples: int = 20,
        window: int = 200,
        block: int = 7,
        threshold: float = 5.0,
        min_reference: int = 100,
        min_scale: float = 1e-10,
    ) -> None: ...
    def push(self, step: int, values: npt.ArrayLike) -> npt.NDArray[np.float64]: ...
    def push_many(self, steps: npt.ArrayLike, values: npt.ArrayLike) -> npt.NDArray[np.float64]: ...
    @property
    def series(self) -> int: ...
    @property
    def samples_seen(self) -> int: ...

FINISH_JUMP_COLUMNS: tuple[str, ...]

_Outcome = tuple[npt.NDArray[np.float64] | None, npt.NDArray[np.float64] | None, str | None,
                 tuple[str, list[int]] | None] | None

class SampleFinisher:
    """The per-sample finish of a tracker (csrc/include/ndt/sample_finish.h): metrics of every
    layer's Gram, records into a RecordRing, one JumpBank per layer fed the metric values.

    finish/record/flush return None in the usual case, else (records the ring could not take
    (n, width) or None, detections (k, 8) of FINISH_JUMP_COLUMNS or None, weight-metric error text
    or None, (batched-solve error text, layers of its flagged rows) or None). spectra_batch = k > 1:
    finish() keeps samples until k wait, then records them in order; flush() records what waits,
    record() flushes first. Bad options or shapes: ValueError. Not thread-safe.
    """

    def __init__(self, layers: int, *, eps: float, energy_threshold: float, center: bool, metrics: int,
                 weight_metrics: int, track_weights: bool, detect_jumps: bool, ndt_window: int = 50,
                 ndt_z_threshold: float = 3.0, spectra_batch: int = 1) -> None: ...
    def finish(self, ring: RecordRing | None, step: int, loss: float, grad_norm: float, layers: list[int],
               accumulators: list[GramAccumulator], weights: list[ViewTuple | None], failed: list[int],
               threads: int, refills: list[ViewTuple | None] = ...) -> _Outcome: ...
    def record(self, ring: RecordRing | None, step: int, loss: float, grad_norm: float, layers: npt.ArrayLike,
               metrics: npt.ArrayLike, weight_metrics: npt.ArrayLike | None, rows_seen: npt.ArrayLike,
               threads: int = 1) -> _Outcome: ...
    def flush(self, ring: RecordRing | None, threads: int) -> _Outcome: ...
    @property
    def pending(self) -> int: ...
    @property
    def spectra_batch(self) -> int: ...
    def replay(self, layer: int, steps: npt.ArrayLike, values: npt.ArrayLike) -> None: ...
    @property
    def width(self) -> int: ...
    @property
    def series(self) -> int: ...

# ---- CUDA (csrc/python/bindings_cuda.cpp; present only when HAS_CUDA) -------------------------------
# Compiled but never run on a GPU so far: see docs/CUDA.md. Use ndt_fast.cuda, not this.
HAS_CUDA: bool

class _CudaModule:
    RECORD_WIDTH: int
    JACOBI_MAX_DIM: int
    SYEVJ_BATCHED_MAX_DIM: int

    @staticmethod
    def availability() -> dict[str, bool | int | str]: ...
    @staticmethod
    def load_math_libraries(search_dirs: list[str]) -> dict[str, bool | int | str]: ...

    class Context:
        def __init__(self, device: int) -> None: ...
        @property
        def device(self) -> int: ...
        @property
        def has_cublas(self) -> bool: ...
        @property
        def has_cusolver(self) -> bool: ...

    @staticmethod
    def gram_update(
        ctx: _CudaModule.Context,
        view: ViewTuple,
        *,
        side: str,
        gram: int,
        beta: float,
        stream: int,
        use_cublas: bool = True,
    ) -> None: ...

    class SpectraPlan:
        def __init__(
            self,
            ctx: _CudaModule.Context,
            dims: list[int],
            *,
            eps: float,
            energy_threshold: float,
            metrics: int,
            solver: str,
        ) -> None: ...
        @property
        def workspace_bytes(self) -> int: ...
        @property
        def dims(self) -> list[int]: ...
        def run(
            self, ctx: _CudaModule.Context, grams: list[int], *, workspace: int, records: int, stream: int
        ) -> None: ...
        def eigenvalues(
            self,
            ctx: _CudaModule.Context,
            grams: list[int],
            *,
            workspace: int,
            lambdas: list[int],
            infos: list[int],
            stream: int,
        ) -> None: ...

    class PinnedRecordRing:
        def __init__(self, slots: int, slot_records: int, width: int) -> None: ...
        def push(self, records: int, count: int, *, tag: int, stream: int) -> bool: ...
        def pop(self, max_records: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]: ...
        @property
        def pending(self) -> int: ...
        @property
        def dropped(self) -> int: ...
        @property
        def slots(self) -> int: ...
        @property
        def slot_records(self) -> int: ...
        @property
        def width(self) -> int: ...

cuda: _CudaModule  # only when HAS_CUDA
