"""The EMA helper: the closed-form average, parameters only, and a state that survives a checkpoint."""

import pytest
import torch

from variational.errors import CheckpointError, ConfigError
from variational.training import EMA, load_checkpoint, save_checkpoint


class WithBuffer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)
        self.norm = torch.nn.BatchNorm1d(2)  # running_mean/var and num_batches_tracked are buffers


def test_the_average_is_the_closed_form_geometric_sum():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema, decay = EMA(model, decay=0.9), 0.9
    for value in (1.0, 2.0, 3.0):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update(model)
    # avg_3 = (1-d) (3 + 2 d + 1 d^2) from avg_0 = 0: 0.1 * (3 + 1.8 + 0.81) = 0.561
    expected = (1 - decay) * (3.0 + 2.0 * decay + 1.0 * decay**2)
    assert ema.averages["weight"].item() == pytest.approx(expected, rel=1e-6)  # float32 rounding of 0.561


def test_buffers_are_left_alone():
    model = WithBuffer()
    ema = EMA(model, decay=0.5)
    assert set(ema.averages) == {"lin.weight", "lin.bias", "norm.weight", "norm.bias"}
    model.train()
    model.norm(torch.randn(8, 2) * 5 + 3)  # moves the running statistics
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    ema.update(model)
    ema.copy_to(model)
    for name, value in model.named_buffers():
        assert torch.equal(value, buffers[name]), name


def test_applied_swaps_in_the_average_and_restores_the_parameters():
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, decay=0.0)  # decay 0: the average is the last update's parameters
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    with torch.no_grad():
        model.weight.fill_(2.0)
    with ema.applied(model):
        assert torch.equal(model.weight, torch.ones(2, 2))
    assert torch.equal(model.weight, torch.full((2, 2), 2.0))


def test_ema_state_survives_save_and_load_bit_for_bit(tmp_path):
    torch.manual_seed(0)
    model = WithBuffer()
    opt = torch.optim.Adam(model.parameters())
    ema = EMA(model, decay=0.999)
    for _ in range(5):
        opt.zero_grad()
        model.norm(model.lin(torch.randn(4, 3))).square().sum().backward()
        opt.step()
        ema.update(model)
    save_checkpoint(tmp_path / "c.safetensors", model, opt, {"step": 5}, extra=ema.tensors())
    twin = WithBuffer()
    twin_ema = EMA(twin, decay=0.999)
    saved = load_checkpoint(tmp_path / "c.safetensors", twin, torch.optim.Adam(twin.parameters()))
    twin_ema.load_tensors(saved.extra)
    for name, value in ema.averages.items():
        assert torch.equal(twin_ema.averages[name], value), name
    assert not torch.equal(ema.averages["lin.weight"], model.lin.weight)  # the average is not the weights


def test_bad_decay_and_mismatched_state_are_named():
    with pytest.raises(ConfigError, match="decay must lie in"):
        EMA(torch.nn.Linear(1, 1), decay=1.0)
    ema = EMA(torch.nn.Linear(1, 1))
    with pytest.raises(CheckpointError, match="missing \\['bias'\\]"):
        ema.load_tensors({"ema.weight": torch.zeros(1, 1)})
