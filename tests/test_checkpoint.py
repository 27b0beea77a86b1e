"""Atomic, pickle-free persistence (variational.io; variational.checkpoint re-exports it)."""

import pickle

import pytest
import torch

from variational.errors import CheckpointError
from variational.io import (
    atomic_write,
    dumps_json,
    load_json,
    load_tensors,
    read_metadata,
    save_json,
    save_tensors,
)


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
    with pytest.raises(CheckpointError, match="w.safetensors: the data or metadata does not match its checksum"):
        load_tensors(path)


def test_edited_metadata_is_detected(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_tensors(path, {"w": torch.arange(4.0)}, metadata={"state": '{"epoch": 1}'})
    meta = read_metadata(path)
    save_file({"w": torch.arange(4.0)}, str(path), metadata={**meta, "state": '{"epoch": 7}'})  # checksum kept
    with pytest.raises(CheckpointError, match="w.safetensors: the data or metadata does not match its checksum"):
        load_tensors(path)


def test_json_is_strict_nan_becomes_null(tmp_path):
    save_json(tmp_path / "m.json", {"elbo": float("nan"), "xs": [1.5, float("-inf")]})
    assert load_json(tmp_path / "m.json") == {"elbo": None, "xs": [1.5, None]}
    assert "NaN" not in dumps_json({"a": float("nan")})


def test_unwritable_target_is_one_checkpoint_error_naming_it(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CheckpointError, match="cannot write .*file/sub/x.json"):
        save_json(blocker / "sub" / "x.json", {})
