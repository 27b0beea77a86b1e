"""Image datasets for the VAE: IDX files (MNIST family), scikit-learn digits, numpy arrays.

>>> from variational import data
>>> ds = data.load("digits")
>>> ds.name, ds.image_shape, len(ds.train), len(ds.test)
('digits', (28, 28), 1500, 297)
>>> tr, val = data.split_validation(ds.train, fraction=0.1, seed=0)
>>> len(tr), len(val)
(1350, 150)
"""

from variational.data import idx
from variational.data.binarize import MODES as BINARIZATION_MODES
from variational.data.binarize import binarize_dynamic, binarize_static, check_mode
from variational.data.datasets import (
    DataError,
    Dataset,
    DatasetNotFoundError,
    Split,
    load,
    names,
    register,
    search_dirs,
    split_validation,
)
from variational.data.idx import IdxError, read_idx, write_idx

__all__ = [
    "BINARIZATION_MODES",
    "DataError",
    "Dataset",
    "DatasetNotFoundError",
    "IdxError",
    "Split",
    "binarize_dynamic",
    "binarize_static",
    "check_mode",
    "idx",
    "load",
    "names",
    "read_idx",
    "register",
    "search_dirs",
    "split_validation",
    "write_idx",
]
