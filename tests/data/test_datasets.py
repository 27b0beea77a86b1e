"""Named datasets: scikit-learn digits, IDX directories (through files the test writes from the
digits set, plus the real Debian Fashion-MNIST files where installed), numpy files, validation
splits."""

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from variational import data
from variational.data import datasets
from variational.data.idx import IdxError, write_idx

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@pytest.fixture(scope="module")
def digits():
    bunch = load_digits()
    return bunch.images, bunch.target


def write_mnist_dir(directory: Path, images: np.ndarray, labels: np.ndarray, n_test: int) -> Path:
    """Four IDX files in the published layout: train gzipped, test uncompressed (both accepted)."""
    grey = np.round(images * (255 / 16)).astype(np.uint8)
    cut = len(grey) - n_test
    parts = (grey[:cut], labels[:cut].astype(np.uint8), grey[cut:], labels[cut:].astype(np.uint8))
    for stem, array, suffix in zip(STEMS, parts, (".gz", ".gz", "", "")):
        write_idx(directory / f"{stem}{suffix}", array)
    return directory


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No $VARIATIONAL_DATA and an empty system root, so tests never see the machine's datasets."""
    monkeypatch.delenv(datasets.ENV_VAR, raising=False)
    monkeypatch.setattr(datasets, "SYSTEM_ROOT", tmp_path / "system")
    return tmp_path


def test_names():
    assert data.names() == ("digits", "digits8", "fashion-mnist", "kmnist", "mnist")


def test_digits_native(digits):
    ds = data.load("digits8")
    images, target = digits
    assert (ds.name, ds.image_shape, len(ds.train), len(ds.test)) == ("digits8", (8, 8), 1500, 297)
    # the fixed split: the first 1500 scans train, the last 297 test; grey levels 0..16 -> /16
    torch.testing.assert_close(ds.test.images, torch.tensor(images[1500:] / 16, dtype=torch.float32), rtol=0, atol=0)
    assert ds.train.labels.tolist() == target[:1500].tolist()
    assert ds.train.images.dtype == torch.float32 and ds.train.labels.dtype == torch.int64


def test_digits_upscaled_keeps_each_image_mean():
    small, big = data.load("digits8"), data.load("digits")
    assert big.image_shape == (28, 28) and "28x28" in big.description and "bilinear" in big.description
    assert big.train.labels.equal(small.train.labels)
    assert 0 <= big.train.images.min() and big.train.images.max() <= 1
    # Half-pixel bilinear upsampling by 3.5 gives every source pixel total weight 3.5^2 (border
    # replication included), so each image's mean is kept; 1e-6 covers float32 summation.
    torch.testing.assert_close(big.test.images.mean((1, 2)), small.test.images.mean((1, 2)), rtol=0, atol=1e-6)


def test_unknown_name_lists_names():
    with pytest.raises(data.DataError, match="unknown dataset 'cifar'.*digits, digits8, fashion-mnist, kmnist, mnist"):
        data.load("cifar")


def test_fashion_mnist_from_idx_dir(isolated, digits):
    images, target = digits
    write_mnist_dir(isolated / "root" / "fashion-mnist", images, target, n_test=300)
    ds = data.load("fashion_mnist", data_dir=isolated / "root")  # underscores accepted
    assert (ds.name, ds.image_shape, len(ds.train), len(ds.test)) == ("fashion-mnist", (8, 8), 1497, 300)
    expected = np.round(images[1497:] * (255 / 16)) / 255  # the uint8 grey levels the files hold, /255
    torch.testing.assert_close(ds.test.images, torch.tensor(expected, dtype=torch.float32), rtol=0, atol=1e-7)
    assert ds.train.labels.tolist() == target[:1497].tolist()
    assert str(isolated / "root" / "fashion-mnist") in ds.description and "published split" in ds.description

    # The real Debian files, where the package is installed: the published sizes and the 6000/1000
    # images per class of Fashion-MNIST (Xiao et al. 2017, table 1). The synthetic check above
    # always runs; this one adds to it.
    if DEBIAN_FASHION.is_dir():
        real = datasets._load_idx(datasets.IDX_SOURCES["fashion-mnist"], DEBIAN_FASHION)
        assert real.image_shape == (28, 28) and (len(real.train), len(real.test)) == (60000, 10000)
        assert real.train.labels.bincount().tolist() == [6000] * 10
        assert real.test.labels.bincount().tolist() == [1000] * 10
        assert 0 == real.train.images.min() and real.train.images.max() == 1


def test_lookup_order(isolated, monkeypatch, digits):
    images, target = digits
    env_root, own = isolated / "env", isolated / "own"
    write_mnist_dir(env_root / "mnist", images, target, n_test=100)
    write_mnist_dir(own, images, target, n_test=200)  # data_dir holding the files itself
    write_mnist_dir(isolated / "system" / "mnist", images, target, n_test=400)
    monkeypatch.setenv(datasets.ENV_VAR, str(env_root))
    assert len(data.load("mnist", data_dir=own).test) == 200  # --data-dir first
    assert len(data.load("mnist").test) == 100  # then $VARIATIONAL_DATA/<name>
    monkeypatch.delenv(datasets.ENV_VAR)
    assert len(data.load("mnist").test) == 400  # then the Debian location
    monkeypatch.setenv(datasets.ENV_VAR, str(own))  # a root only: files directly in it are not taken
    assert len(data.load("mnist").test) == 400


@pytest.mark.parametrize(
    "name, how",
    [
        ("fashion-mnist", "apt-get install dataset-fashion-mnist"),
        ("mnist", "https://yann.lecun.com/exdb/mnist/"),
        ("kmnist", "http://codh.rois.ac.jp/kmnist/dataset/kmnist/"),
    ],
)
def test_missing_dataset_says_where_and_how(isolated, monkeypatch, name, how):
    monkeypatch.setenv(datasets.ENV_VAR, str(isolated / "env"))
    with pytest.raises(data.DatasetNotFoundError) as info:
        data.load(name, data_dir=isolated / "mine")
    message = str(info.value)
    for place in (isolated / "mine" / name, isolated / "mine", isolated / "env" / name, isolated / "system" / name):
        assert str(place) in message
    assert how in message and "train-images-idx3-ubyte.gz" in message


def test_incomplete_and_corrupt_directories(isolated, digits):
    images, target = digits
    directory = write_mnist_dir(isolated / "kmnist", images, target, n_test=100)
    (directory / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(data.DataError, match="incomplete Kuzushiji-MNIST directory: missing t10k-labels-idx1-ubyte"):
        data.load("kmnist", data_dir=isolated)
    bad = write_idx(directory / "t10k-labels-idx1-ubyte", target[:99].astype(np.uint8))  # one label short
    with pytest.raises(IdxError, match="image/label count mismatch: 100 images .* holds 99 labels") as info:
        data.load("kmnist", data_dir=isolated)
    assert str(bad) in str(info.value)


def test_npz_with_labels(tmp_path):
    rng = np.random.default_rng(1)
    x_train, x_test = (
        rng.integers(0, 256, (6, 5, 4, 1), dtype=np.uint8),
        rng.integers(0, 256, (3, 5, 4, 1), dtype=np.uint8),
    )
    path = tmp_path / "arrays.npz"
    np.savez(path, x_train=x_train, x_test=x_test, y_train=np.arange(6), y_test=np.array([2, 1, 0], np.int32))
    ds = data.load(str(path))
    assert (ds.image_shape, len(ds.train), len(ds.test)) == ((5, 4), 6, 3)
    torch.testing.assert_close(ds.train.images, torch.tensor(x_train[..., 0] / 255, dtype=torch.float32))
    assert ds.test.labels.tolist() == [2, 1, 0] and ds.test.labels.dtype == torch.int64


def test_npz_float_train_test_and_prefix(tmp_path):
    train, test = np.linspace(0, 1, 2 * 3 * 3).reshape(2, 3, 3), np.ones((1, 3, 3), np.float32)
    np.savez(tmp_path / "f.data", train=train, test=test)  # no .npz suffix: name it with npz:
    ds = data.load(f"npz:{tmp_path / 'f.data.npz'}")
    assert ds.train.labels is None and ds.test.labels is None
    torch.testing.assert_close(ds.train.images, torch.tensor(train, dtype=torch.float32))


def test_npy_fixed_split(tmp_path):
    np.save(tmp_path / "all.npy", np.zeros((25, 6, 6), np.uint8))
    ds = data.load(str(tmp_path / "all.npy"))
    # the last ceil(10% of 25) = 3 images are the test set
    assert (len(ds.train), len(ds.test)) == (22, 3) and "last 3 (10%) test" in ds.description


@pytest.mark.parametrize(
    "arrays, defect",
    [
        ({"x_train": np.zeros((2, 3)), "x_test": np.zeros((1, 3, 3))}, r"\[x_train\]: expected images of shape"),
        (
            {"x_train": np.full((2, 3, 3), 1.5), "x_test": np.zeros((1, 3, 3))},
            r"must lie in \[0, 1\], found values in \[1.5, 1.5\]",
        ),
        ({"x_train": np.full((2, 3, 3), np.nan), "x_test": np.zeros((1, 3, 3))}, "non-finite"),
        ({"x_train": np.zeros((2, 3, 3), np.int64), "x_test": np.zeros((1, 3, 3))}, "expected uint8 .* found int64"),
        ({"images": np.zeros((2, 3, 3))}, "expected arrays x_train and x_test .* found images"),
        (
            {"train": np.zeros((2, 3, 3)), "test": np.zeros((1, 3, 3)), "y_train": np.zeros(2, int)},
            "found only y_train",
        ),
        (
            {
                "x_train": np.zeros((2, 3, 3)),
                "x_test": np.zeros((1, 3, 3)),
                "y_train": np.zeros(3, int),
                "y_test": np.zeros(1, int),
            },
            r"\[y_train\]: expected 2 integer labels",
        ),
        (
            {"x_train": np.zeros((2, 3, 3)), "x_test": np.zeros((1, 4, 4))},
            r"x_train images are \(3, 3\) but x_test images are \(4, 4\)",
        ),
    ],
)
def test_npz_defects_name_the_file(tmp_path, arrays, defect):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(data.DataError, match=defect) as info:
        data.load(str(path))
    assert str(path) in str(info.value)


def test_pickled_or_missing_arrays_refused(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(data.DataError, match="not a readable .npy/.npz file of plain arrays"):
        data.load(str(path))
    with pytest.raises(data.DataError, match="absent.npz: file not found"):
        data.load(str(tmp_path / "absent.npz"))


def test_split_validation_sizes_disjoint_deterministic():
    split = data.Split(torch.rand(50, 2, 2), torch.arange(50))  # labels identify the examples
    train, val = data.split_validation(split, fraction=0.1, seed=0)
    assert (len(train), len(val)) == (45, 5)
    assert sorted(train.labels.tolist() + val.labels.tolist()) == list(range(50))  # disjoint, complete
    assert train.images.equal(split.images[train.labels])  # images stay with their labels
    again = data.split_validation(split, fraction=0.1, seed=0)[1]
    other = data.split_validation(split, fraction=0.1, seed=1)[1]
    assert again.labels.equal(val.labels) and not other.labels.equal(val.labels)
    with pytest.raises(ValueError, match="fraction"):
        data.split_validation(split, fraction=1.0)
    with pytest.raises(ValueError, match="fraction: 0.001 of 50 examples"):
        data.split_validation(split, fraction=0.001)


def test_split_checks_types():
    with pytest.raises(ValueError, match="Split.images: expected float32"):
        data.Split(torch.zeros(2, 3, 3, dtype=torch.uint8), None)
    with pytest.raises(ValueError, match=r"Split.labels: expected int64 \(2,\)"):
        data.Split(torch.zeros(2, 3, 3), torch.zeros(3, dtype=torch.int64))
