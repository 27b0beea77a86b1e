"""IDX reader and writer: exact round trips, the header bytes of the published format, and one
error per defect, each naming the file."""

import gzip

import numpy as np
import pytest

from variational.data.idx import IdxError, read_idx, read_images, read_labels, read_pair, write_idx


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, size=(5, 4, 3), dtype=np.uint8)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip_uint8(tmp_path, images, suffix):
    path = write_idx(tmp_path / f"x-idx3-ubyte{suffix}", images)
    back = read_idx(path)
    assert back.dtype == np.uint8 and back.shape == (5, 4, 3)
    np.testing.assert_array_equal(back, images)
    assert back.flags.writeable  # callers may modify what they read
    raw = path.read_bytes()
    assert raw.startswith(b"\x1f\x8b") == (suffix == ".gz")


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_round_trip_wide_types(tmp_path, dtype):
    array = (np.arange(24).reshape(2, 3, 4) - 11).astype(dtype) * dtype(3)
    back = read_idx(write_idx(tmp_path / "a.idx.gz", array))
    assert back.dtype == np.dtype(dtype)  # native byte order on return
    np.testing.assert_array_equal(back, array)


def test_header_matches_published_layout(tmp_path):
    # MNIST images: magic 0x00000803 (unsigned byte, 3 dims), then big-endian sizes (LeCun's page).
    path = write_idx(tmp_path / "x", np.zeros((60, 28, 27), np.uint8))
    assert path.read_bytes()[:16] == bytes.fromhex("000008030000003c0000001c0000001b")
    path = write_idx(tmp_path / "y", np.array([258], dtype=np.int16))
    assert path.read_bytes() == bytes.fromhex("00000b01000000010102")  # 258 big-endian


def test_gzip_detected_by_content_and_reproducible(tmp_path, images):
    a = write_idx(tmp_path / "a.gz", images).read_bytes()
    assert write_idx(tmp_path / "b.gz", images).read_bytes() == a  # mtime 0: same bytes
    (tmp_path / "no-suffix").write_bytes(a)
    np.testing.assert_array_equal(read_idx(tmp_path / "no-suffix"), images)


def test_write_rejects_unrepresentable(tmp_path):
    with pytest.raises(ValueError, match="IDX cannot hold"):
        write_idx(tmp_path / "b", np.zeros((2, 2), dtype=bool))
    with pytest.raises(ValueError, match="IDX cannot hold"):
        write_idx(tmp_path / "s", np.array(3, dtype=np.uint8))


def _expect(path, defect, read=read_idx):
    with pytest.raises(IdxError) as info:
        read(path)
    message = str(info.value)
    assert message.startswith(str(path)) and defect in message, message
    return message


@pytest.mark.parametrize("keep", [2, 10, 16 + 59])  # inside the magic, inside the dims, inside the data
def test_truncated_file(tmp_path, images, keep):
    full = write_idx(tmp_path / "full", images).read_bytes()
    (tmp_path / "cut").write_bytes(full[:keep])
    message = _expect(tmp_path / "cut", "truncated IDX file")
    if keep == 16 + 59:
        assert "60 data bytes, found 59" in message


def test_truncated_gzip(tmp_path, images):
    full = write_idx(tmp_path / "full.gz", images).read_bytes()
    (tmp_path / "cut.gz").write_bytes(full[: len(full) // 2])
    _expect(tmp_path / "cut.gz", "truncated gzip stream")


def test_wrong_magic(tmp_path, images):
    good = write_idx(tmp_path / "good", images).read_bytes()
    (tmp_path / "swapped").write_bytes(b"\x03\x08\x00\x00" + good[4:])  # little-endian magic
    assert "0x03080000" in _expect(tmp_path / "swapped", "wrong magic number")
    (tmp_path / "type").write_bytes(b"\x00\x00\x07\x03" + good[4:])  # 0x07 is no IDX type
    _expect(tmp_path / "type", "wrong magic number")
    (tmp_path / "png.gz").write_bytes(gzip.compress(b"\x89PNG\r\n\x1a\n" + bytes(100)))
    _expect(tmp_path / "png.gz", "wrong magic number")


def test_wrong_dims(tmp_path, images):
    (tmp_path / "zero").write_bytes(b"\x00\x00\x08\x00")
    _expect(tmp_path / "zero", "declares 0 dimensions")
    labels_as_images = write_idx(tmp_path / "labels", np.arange(5, dtype=np.uint8))
    _expect(labels_as_images, "wrong dimensions for an image file", read_images)
    images_as_labels = write_idx(tmp_path / "images", images)
    assert "shape 5x4x3" in _expect(images_as_labels, "wrong dimensions for a label file", read_labels)
    _expect(write_idx(tmp_path / "wide", images.astype(np.int16)), "wrong type for an image file", read_images)
    _expect(write_idx(tmp_path / "empty", images[:, :0]), "holds no pixels", read_images)


def test_wrong_sizes_trailing_bytes(tmp_path, images):
    good = write_idx(tmp_path / "good", images).read_bytes()
    (tmp_path / "long").write_bytes(good + b"\x00\x00")
    _expect(tmp_path / "long", "2 extra bytes follow")


def test_count_mismatch_names_both_files(tmp_path, images):
    x = write_idx(tmp_path / "train-images-idx3-ubyte", images)
    y = write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(4, dtype=np.uint8))
    message = _expect(x, "image/label count mismatch", lambda p: read_pair(p, y))
    assert "5 images" in message and f"{y} holds 4 labels" in message


def test_label_out_of_range(tmp_path):
    y = write_idx(tmp_path / "labels", np.array([0, 9, 10], dtype=np.uint8))
    _expect(y, "label 10 out of range for 10 classes", lambda p: read_labels(p, num_classes=10))
    np.testing.assert_array_equal(read_labels(y), [0, 9, 10])  # no class count given: no check


def test_missing_file(tmp_path):
    _expect(tmp_path / "absent.gz", "file not found")
