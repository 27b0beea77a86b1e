"""Named image datasets as float tensors in [0, 1], with their published train/test splits.

Names: `digits` (scikit-learn's 8x8 digits, shipped inside that package, upscaled to 28x28),
`digits8` (the same at their native 8x8), `mnist`, `fashion-mnist` and `kmnist` (IDX files found
on disk, never downloaded), and numpy files: `load("images.npz")`, `load("npz:PATH")`,
`load("npy:PATH")`.

IDX files are looked up, in order, in `<data_dir>/<name>/`, `<data_dir>/`, `$VARIATIONAL_DATA/<name>/`
(several roots may be joined with os.pathsep) and `/usr/share/datasets/<name>/`, each holding the
four standard files, gzipped or not.

>>> ds = load("digits8")
>>> ds.image_shape, len(ds.train), len(ds.test)
((8, 8), 1500, 297)
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from variational.data import idx
from variational.errors import DataError

__all__ = [
    "DataError",
    "DatasetNotFoundError",
    "Split",
    "Dataset",
    "load",
    "names",
    "register",
    "split_validation",
    "search_dirs",
]

ENV_VAR = "VARIATIONAL_DATA"
SYSTEM_ROOT = Path("/usr/share/datasets")  # where Debian's dataset-* packages install
IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
DIGITS_TEST = 297  # digits has no published split: the last 297 of 1797 images are the test set
NPY_TEST_FRACTION = 0.1  # a single .npy array: its last 10% (rounded up) is the test set


class DatasetNotFoundError(DataError):
    """A named dataset found in none of the searched directories."""


@dataclass(frozen=True, eq=False)
class Split:
    """Images (N, H, W) float32 in [0, 1] and labels (N,) int64, or None for unlabelled data."""

    images: Tensor
    labels: Tensor | None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.float32 or self.images.dim() != 3:
            raise ValueError(
                f"Split.images: expected float32 (N, H, W), got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels is not None and (self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]):
            raise ValueError(
                f"Split.labels: expected int64 ({len(self.images)},), got "
                f"{self.labels.dtype} {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A named dataset: train and test splits of images with one shape, and a one-line description."""

    name: str
    train: Split
    test: Split
    description: str

    def __post_init__(self) -> None:
        if self.train.images.shape[1:] != self.test.images.shape[1:]:
            raise ValueError(
                f"Dataset {self.name}: train images are {tuple(self.train.images.shape[1:])} "
                f"but test images are {tuple(self.test.images.shape[1:])}"
            )

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.train.images.shape[1:])


_REGISTRY: dict[str, Callable[[Path | None], Dataset]] = {}


def register(name: str) -> Callable:
    """Decorator: register `loader(data_dir) -> Dataset` under `name` for `load(name)`."""

    def wrap(loader: Callable[[Path | None], Dataset]) -> Callable[[Path | None], Dataset]:
        _REGISTRY[name] = loader
        return loader

    return wrap


def names() -> tuple[str, ...]:
    """The registered dataset names (numpy files are loaded by path, see `load`)."""
    return tuple(sorted(_REGISTRY))


def load(name: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load a named dataset or a .npy/.npz file; `data_dir` is searched first for IDX datasets.

    >>> load("digits").image_shape
    (28, 28)
    """
    array_path = _array_path(name)
    if array_path is not None:
        return _load_arrays(name, array_path)
    key = name.strip().lower().replace("_", "-")
    if key not in _REGISTRY:
        raise DataError(
            f"unknown dataset {name!r}: choose one of {', '.join(names())}, "
            f"or give a .npy/.npz file (npz:PATH, npy:PATH)"
        )
    return _REGISTRY[key](None if data_dir is None else Path(data_dir))


def split_validation(split: Split, fraction: float = 0.1, seed: int = 0) -> tuple[Split, Split]:
    """Hold out a random `fraction` of `split` for validation: (train, validation), disjoint.

    Deterministic in `seed`; each part keeps the original order of its examples.

    >>> tr, val = split_validation(load("digits8").train, fraction=0.2, seed=0)
    >>> len(tr), len(val)
    (1200, 300)
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction: expected a value strictly between 0 and 1, got {fraction}")
    n = len(split)
    n_val = round(fraction * n)
    if not 0 < n_val < n:
        raise ValueError(f"fraction: {fraction} of {n} examples leaves an empty train or validation part")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return _subset(split, perm[n_val:].sort().values), _subset(split, perm[:n_val].sort().values)


def _subset(split: Split, index: Tensor) -> Split:
    return Split(split.images[index], None if split.labels is None else split.labels[index])


# ---------------------------------------------------------------- scikit-learn digits


def _digits(size: int | None) -> tuple[Split, Split]:
    from sklearn.datasets import load_digits  # reads the copy shipped inside scikit-learn

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32) / 16.0  # grey levels 0..16
    if size is not None:
        images = torch.nn.functional.interpolate(
            images[:, None], size=(size, size), mode="bilinear", align_corners=False
        )[:, 0]
        images = images.clamp_(0.0, 1.0)  # bilinear weights are convex; clamp only rounding
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    cut = len(images) - DIGITS_TEST
    return Split(images[:cut], labels[:cut]), Split(images[cut:], labels[cut:])


@register("digits")
def _load_digits(data_dir: Path | None) -> Dataset:
    train, test = _digits(28)
    return Dataset(
        "digits",
        train,
        test,
        f"scikit-learn digits (8x8, grey 0..16 scaled to [0,1]) upscaled bilinearly to 28x28; "
        f"fixed split: first {len(train)} train, last {len(test)} test",
    )


@register("digits8")
def _load_digits8(data_dir: Path | None) -> Dataset:
    train, test = _digits(None)
    return Dataset(
        "digits8",
        train,
        test,
        f"scikit-learn digits at native 8x8 (grey 0..16 scaled to [0,1]); "
        f"fixed split: first {len(train)} train, last {len(test)} test",
    )


# ---------------------------------------------------------------- IDX datasets (MNIST family)


@dataclass(frozen=True)
class _IdxSource:
    name: str
    title: str
    how_to_get: str
    num_classes: int = 10


_FILES = "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz"
IDX_SOURCES = {
    s.name: s
    for s in (
        _IdxSource(
            "fashion-mnist",
            "Fashion-MNIST",
            "install it with `sudo apt-get install dataset-fashion-mnist`, or download "
            f"{_FILES} from http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        ),
        _IdxSource(
            "mnist",
            "MNIST",
            f"download {_FILES} from https://yann.lecun.com/exdb/mnist/ "
            f"(mirror: https://ossci-datasets.s3.amazonaws.com/mnist/)",
        ),
        _IdxSource(
            "kmnist",
            "Kuzushiji-MNIST",
            f"download {_FILES} from http://codh.rois.ac.jp/kmnist/dataset/kmnist/ "
            f"(see https://github.com/rois-codh/kmnist)",
        ),
    )
}


def search_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The directories searched for dataset `name`, in order.

    $VARIATIONAL_DATA is a root only (its `<name>/` subdirectory), so a directory of MNIST files
    named there can never be taken for another dataset; `data_dir` may also hold the files itself.
    """
    dirs = [Path(data_dir).expanduser() / name, Path(data_dir).expanduser()] if data_dir is not None else []
    dirs += [Path(root).expanduser() / name for root in os.environ.get(ENV_VAR, "").split(os.pathsep) if root]
    return dirs + [SYSTEM_ROOT / name]


def _idx_files(directory: Path, title: str) -> dict[str, Path] | None:
    """The four IDX files in `directory` (gzipped or not), None if it holds none of them."""
    found = {}
    for stem in (s for pair in IDX_STEMS.values() for s in pair):
        path = next((p for p in (directory / f"{stem}.gz", directory / stem) if p.is_file()), None)
        if path is not None:
            found[stem] = path
    if found and len(found) < 4:
        missing = sorted(set(s for pair in IDX_STEMS.values() for s in pair) - set(found))
        raise DataError(
            f"{directory}: incomplete {title} directory: missing {', '.join(missing)} (.gz or uncompressed)"
        )
    return found or None


def _idx_split(files: dict[str, Path], part: str, num_classes: int) -> Split:
    images_stem, labels_stem = IDX_STEMS[part]
    images, labels = idx.read_pair(files[images_stem], files[labels_stem], num_classes)
    # uint8 -> float32 in one vectorised pass; /255 maps grey levels onto [0, 1]
    return Split(torch.from_numpy(images).to(torch.float32).div_(255.0), torch.from_numpy(labels).to(torch.int64))


def _load_idx(source: _IdxSource, data_dir: Path | None) -> Dataset:
    dirs = search_dirs(source.name, data_dir)
    for directory in dirs:
        files = _idx_files(directory, source.title)
        if files is not None:
            train = _idx_split(files, "train", source.num_classes)
            test = _idx_split(files, "test", source.num_classes)
            h, w = train.images.shape[1:]
            return Dataset(
                source.name,
                train,
                test,
                f"{source.title} from {directory}: {h}x{w} grey, "
                f"{len(train)} train / {len(test)} test (published split)",
            )
    raise DatasetNotFoundError(
        f"dataset {source.name!r} not found: searched {', '.join(map(str, dirs))}; "
        f"to get it, {source.how_to_get} into one of them "
        f"(or name another directory with --data-dir / data_dir or ${ENV_VAR})"
    )


for _source in IDX_SOURCES.values():
    register(_source.name)(lambda data_dir, _s=_source: _load_idx(_s, data_dir))


# ---------------------------------------------------------------- numpy files


def _array_path(name: str) -> Path | None:
    """The file named by `npz:PATH`, `npy:PATH` or a path ending in .npz/.npy; None otherwise."""
    for prefix in ("npz:", "npy:"):
        if name.startswith(prefix):
            return Path(name[len(prefix) :]).expanduser()
    return Path(name).expanduser() if name.lower().endswith((".npz", ".npy")) else None


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """All arrays of a .npz (by key) or a .npy (key ''), never unpickling anything."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        content = np.load(path, allow_pickle=False)
        if isinstance(content, np.ndarray):
            return {"": content}
        with content:
            return {key: content[key] for key in content.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a readable .npy/.npz file of plain arrays ({e})") from None


def _unit_images(array: np.ndarray, where: str) -> Tensor:
    """(N, H, W), (N, H, W, 1) or (N, 1, H, W) images, uint8 0..255, bool or float in [0, 1] -> float32."""
    if array.ndim == 4 and 1 in (array.shape[3], array.shape[1]):
        array = array[..., 0] if array.shape[3] == 1 else array[:, 0]
    if array.ndim != 3 or array.shape[0] == 0:
        raise DataError(f"{where}: expected images of shape (N, H, W) or (N, H, W, 1), found {array.shape}")
    if array.dtype == np.uint8:
        return torch.from_numpy(array.astype(np.float32) / np.float32(255.0))
    if array.dtype == np.bool_:
        return torch.from_numpy(array.astype(np.float32))
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(
            f"{where}: expected uint8 (0..255) or float (0..1) images, found {array.dtype}; "
            f"convert integer grey levels with .astype(numpy.uint8)"
        )
    if not np.isfinite(array).all():
        raise DataError(f"{where}: float images hold non-finite values (NaN or inf)")
    if array.min() < 0.0 or array.max() > 1.0:
        raise DataError(f"{where}: float images must lie in [0, 1], found values in [{array.min()}, {array.max()}]")
    return torch.from_numpy(array.astype(np.float32))


def _int_labels(array: np.ndarray, count: int, where: str) -> Tensor:
    if array.shape != (count,) or not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{where}: expected {count} integer labels, found {array.dtype} of shape {array.shape}")
    if count and array.min() < 0:
        raise DataError(f"{where}: negative label {array.min()}")
    return torch.from_numpy(array.astype(np.int64))


def _npz_split(arrays: dict[str, np.ndarray], images_key: str, labels_key: str, path: Path) -> Split:
    images = _unit_images(arrays[images_key], f"{path}[{images_key}]")
    if labels_key not in arrays:
        return Split(images, None)
    return Split(images, _int_labels(arrays[labels_key], len(images), f"{path}[{labels_key}]"))


def _load_arrays(name: str, path: Path) -> Dataset:
    arrays = _read_arrays(path)
    if "" in arrays:
        return _npy_dataset(name, path, arrays[""])
    keys = next((k for k in (("x_train", "x_test"), ("train", "test")) if set(k) <= set(arrays)), None)
    if keys is None:
        raise DataError(
            f"{path}: expected arrays x_train and x_test (or train and test), "
            f"found {', '.join(sorted(arrays)) or 'none'}"
        )
    if ("y_train" in arrays) != ("y_test" in arrays):
        only = "y_train" if "y_train" in arrays else "y_test"
        raise DataError(f"{path}: labels must be given for both splits: found only {only}")
    train = _npz_split(arrays, keys[0], "y_train", path)
    test = _npz_split(arrays, keys[1], "y_test", path)
    if train.images.shape[1:] != test.images.shape[1:]:
        raise DataError(
            f"{path}: {keys[0]} images are {tuple(train.images.shape[1:])} "
            f"but {keys[1]} images are {tuple(test.images.shape[1:])}"
        )
    h, w = train.images.shape[1:]
    return Dataset(
        name,
        train,
        test,
        f"{path} ({keys[0]}/{keys[1]}): {h}x{w}, {len(train)} train / {len(test)} test (the file's split)",
    )


def _npy_dataset(name: str, path: Path, array: np.ndarray) -> Dataset:
    images = _unit_images(array, str(path))
    n_test = math.ceil(NPY_TEST_FRACTION * len(images))
    if n_test >= len(images):
        raise DataError(f"{path}: {len(images)} image(s) are too few to hold out a test part")
    cut = len(images) - n_test
    h, w = images.shape[1:]
    return Dataset(
        name,
        Split(images[:cut], None),
        Split(images[cut:], None),
        f"{path}: {h}x{w}, {len(images)} unlabelled images; fixed split: first {cut} train, last {n_test} (10%) test",
    )
