"""IDX files, the format of MNIST, Fashion-MNIST and KMNIST, read and written with numpy.

Layout (LeCun et al., "THE MNIST DATABASE", file-format section): two zero bytes, a type code,
the number of dimensions n, then n big-endian int32 sizes, then the data in C order, big-endian.
Files may be gzipped; a gzip file is recognised by its magic bytes, not by its name.

Every defect raises `IdxError` (a ValueError) whose message starts with the file's path:

>>> import numpy as np, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "x-idx3-ubyte.gz")
>>> _ = write_idx(path, np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
>>> read_idx(path).shape
(2, 3, 4)
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from variational.errors import DataError
from variational.io import atomic_write

__all__ = ["IdxError", "read_idx", "write_idx", "read_images", "read_labels", "read_pair"]

# IDX type code -> numpy dtype (multi-byte types are big-endian on disk).
_CODES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


class IdxError(DataError):
    """An IDX file that is missing, truncated or malformed; the message names the file and the defect."""


def _raw_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise IdxError(f"{path}: file not found") from None
    except OSError as e:
        raise IdxError(f"{path}: cannot read ({e.strerror or e})") from None
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise IdxError(f"{path}: truncated gzip stream (the download or copy was cut short)") from None
    except (OSError, zlib.error) as e:
        raise IdxError(f"{path}: corrupt gzip data ({e})") from None


def _parse_header(path: Path, buf: bytes) -> tuple[np.dtype, tuple[int, ...], int]:
    """Check the magic number and dimension sizes; return (dtype, shape, header length)."""
    if len(buf) < 4:
        raise IdxError(f"{path}: truncated IDX file: {len(buf)} bytes, shorter than the 4-byte magic number")
    if buf[0] != 0 or buf[1] != 0 or buf[2] not in _CODES:
        raise IdxError(
            f"{path}: wrong magic number 0x{buf[:4].hex()}: not an IDX file "
            f"(expected 0x0000 then a type code in {{{', '.join(f'0x{c:02x}' for c in _CODES)}}} and a dimension count)"
        )
    ndim = buf[3]
    if ndim == 0:
        raise IdxError(f"{path}: wrong dimensions: the magic number declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise IdxError(
            f"{path}: truncated IDX file: header declares {ndim} dimensions but the file ends at byte {len(buf)}"
        )
    shape = tuple(int(s) for s in np.frombuffer(buf, dtype=">u4", count=ndim, offset=4))
    return _CODES[buf[2]], shape, header


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a numpy array in native byte order.

    Raises IdxError naming the file for a wrong magic number, a truncated file or trailing bytes.
    """
    path = Path(path)
    buf = _raw_bytes(path)
    dtype, shape, header = _parse_header(path, buf)
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow on absurd headers
    found = len(buf) - header
    dims = "x".join(map(str, shape))
    if found < expected:
        raise IdxError(
            f"{path}: truncated IDX file: header declares {dims} {dtype.name} = {expected} data bytes, found {found}"
        )
    if found > expected:
        raise IdxError(
            f"{path}: wrong sizes: header declares {dims} {dtype.name} = {expected} data bytes, "
            f"but {found - expected} extra bytes follow"
        )
    # astype copies: the result is writable and in native byte order.
    return np.frombuffer(buf, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write `array` as an IDX file, gzipped when `path` ends in .gz; atomic (temporary file + rename)."""
    array = np.asarray(array)
    code = next((c for c, dt in _CODES.items() if dt == array.dtype.newbyteorder(">")), None)
    if code is None or array.ndim == 0 or array.ndim > 255:
        raise ValueError(
            f"{path}: IDX cannot hold a {array.ndim}-d array of {array.dtype} "
            f"(types: uint8, int8, int16, int32, float32, float64; 1 to 255 dims)"
        )
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(array, dtype=_CODES[code]).tobytes()
    if str(path).endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)  # mtime 0: the same array gives the same bytes

    def write(tmp: str) -> None:
        Path(tmp).write_bytes(payload)

    return atomic_write(path, write)


def _check_dims(path: Path, array: np.ndarray, ndim: int, what: str) -> None:
    if array.ndim != ndim:
        raise IdxError(
            f"{path}: wrong dimensions for {what}: expected {ndim}, found {array.ndim} "
            f"(shape {'x'.join(map(str, array.shape))})"
        )
    if array.dtype != np.uint8:
        raise IdxError(f"{path}: wrong type for {what}: expected unsigned bytes (0x08), found {array.dtype}")


def read_images(path: str | os.PathLike) -> np.ndarray:
    """An idx3-ubyte image file: uint8 array of shape (count, rows, columns)."""
    array = read_idx(path)
    _check_dims(Path(path), array, 3, "an image file (count, rows, columns)")
    if min(array.shape) == 0:
        dims = "x".join(map(str, array.shape))
        raise IdxError(f"{path}: wrong sizes: an image file with shape {dims} holds no pixels")
    return array


def read_labels(path: str | os.PathLike, num_classes: int | None = None) -> np.ndarray:
    """An idx1-ubyte label file: uint8 array of shape (count,), each label below `num_classes` if given."""
    array = read_idx(path)
    _check_dims(Path(path), array, 1, "a label file (count,)")
    if num_classes is not None and array.size and int(array.max()) >= num_classes:
        raise IdxError(f"{path}: label {int(array.max())} out of range for {num_classes} classes")
    return array


def read_pair(
    images_path: str | os.PathLike, labels_path: str | os.PathLike, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images and their labels, checked to hold the same number of examples."""
    images = read_images(images_path)
    labels = read_labels(labels_path, num_classes)
    if len(images) != len(labels):
        raise IdxError(
            f"{images_path}: image/label count mismatch: {len(images)} images but "
            f"{labels_path} holds {len(labels)} labels"
        )
    return images, labels
