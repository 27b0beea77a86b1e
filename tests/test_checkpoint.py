"""Atomic, pickle-free persistence."""

import pickle

import pytest
import torch

from variational.checkpoint import CheckpointError, atomic_write, load_json, load_tensors, save_json, save_tensors


def test_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "state.safetensors"
    save_tensors(path, {"w": torch.ones(3)})

    def crash(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half a file")
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    assert torch.equal(load_tensors(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["state.safetensors"]


def test_tensors_and_json_round_trip(tmp_path):
    tensors = {"a": torch.arange(6.0).view(2, 3).t(), "step": torch.tensor(7.0)}  # non-contiguous, 0-d
    save_tensors(tmp_path / "t.safetensors", tensors)
    loaded = load_tensors(tmp_path / "t.safetensors")
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
    save_json(tmp_path / "c.json", {"x": [1, 2]})
    assert load_json(tmp_path / "c.json") == {"x": [1, 2]}


def test_a_pickle_is_refused_not_executed(tmp_path):
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"w": [1.0]}))
    with pytest.raises(CheckpointError, match="evil.safetensors: not a readable safetensors file"):
        load_tensors(path)


def test_missing_and_malformed_files_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="nothing.json: file not found"):
        load_json(tmp_path / "nothing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="bad.json: not valid JSON"):
        load_json(tmp_path / "bad.json")


def test_damaged_tensor_bytes_are_detected(tmp_path):
    path = tmp_path / "w.safetensors"
    save_tensors(path, {"w": torch.arange(100.0)})
    raw = bytearray(path.read_bytes())
    raw[-8:] = b"\x00" * 8  # the last two float32 values, inside the data section
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="w.safetensors: the tensor data does not match its checksum"):
        load_tensors(path)
