"""The generic training checkpoint: an exact resume of model, optimizer and generator, and refusals."""

import json

import pytest
import torch
from safetensors.torch import save_file

from variational.errors import CheckpointError
from variational.io import load_tensors, read_metadata
from variational.training import load_checkpoint, save_checkpoint


def _setup(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    return model, torch.optim.Adam(model.parameters(), lr=1e-2), torch.Generator().manual_seed(7)


def _steps(model, opt, g, n):
    for _ in range(n):
        opt.zero_grad()
        model(torch.randn(5, 3, generator=g)).square().mean().backward()
        opt.step()


def test_resume_from_a_checkpoint_continues_bit_for_bit(tmp_path):
    model, opt, g = _setup()
    _steps(model, opt, g, 6)
    reference = [p.clone() for p in model.parameters()]

    model, opt, g = _setup()
    _steps(model, opt, g, 3)
    save_checkpoint(
        tmp_path / "c.safetensors",
        model,
        opt,
        {"step": 3},
        generators={"train": g},
        extra={"loop.order": torch.arange(4)},
    )
    fresh, fresh_opt, fresh_g = _setup(seed=1)  # other weights and generator: all must be overwritten
    saved = load_checkpoint(tmp_path / "c.safetensors", fresh, fresh_opt, generators={"train": fresh_g})
    assert saved.state == {"step": 3} and torch.equal(saved.extra["loop.order"], torch.arange(4))
    _steps(fresh, fresh_opt, fresh_g, 3)
    for a, b in zip(fresh.parameters(), reference):
        assert torch.equal(a, b)


def _rewrite(path, tensors=None, **meta_changes):
    """Rewrite the file as an editor would: new values, the old checksum entry kept."""
    meta = read_metadata(path)
    tensors = tensors if tensors is not None else {k: v for k, v in _raw(path).items()}
    save_file(tensors, str(path), metadata={**meta, **meta_changes})


def _raw(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_an_edited_loop_state_is_refused(tmp_path):
    model, opt, g = _setup()
    path = save_checkpoint(tmp_path / "c.safetensors", model, opt, {"epoch": 1}, generators={"train": g})
    _rewrite(path, state=json.dumps({"epoch": 99999}))
    with pytest.raises(CheckpointError, match="c.safetensors: the data or metadata does not match its checksum"):
        load_checkpoint(path, model, opt, generators={"train": g})


def test_non_finite_weights_are_refused_by_name(tmp_path):
    model, opt, _ = _setup()
    with torch.no_grad():
        model[2].bias.fill_(float("nan"))
    path = save_checkpoint(tmp_path / "c.safetensors", model, opt, {"epoch": 1})  # a valid checksum
    assert torch.isnan(load_tensors(path)["model.2.bias"]).all()
    with pytest.raises(CheckpointError, match="c.safetensors: tensor 'model.2.bias' holds 1 non-finite value"):
        load_checkpoint(path, model, opt)


def test_a_missing_generator_state_is_named(tmp_path):
    model, opt, g = _setup()
    path = save_checkpoint(tmp_path / "c.safetensors", model, opt, {"epoch": 1})
    with pytest.raises(CheckpointError, match="no state of the random generator 'train'"):
        load_checkpoint(path, model, opt, generators={"train": g})
