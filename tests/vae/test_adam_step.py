"""adam_step: the same update as Adam.step, bit for bit, and Adam.step itself wherever the fast path does not apply."""

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from variational.vae import fastpath
from variational.vae.fastpath import adam as fast


def _params(seed: int = 0, device: str = "cpu") -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=g).to(device)) for shape in [(7, 5), (5,), (3, 7), (3,)]]


def _grads(params, step: int, skip: int | None = None) -> None:
    g = torch.Generator().manual_seed(100 + step)
    for i, p in enumerate(params):
        p.grad = None if i == skip else torch.randn(p.shape, generator=g).to(p.device)


def _groups(params, **options):
    # Two groups with their own hyperparameters, as a user's optimiser may have.
    return [{"params": params[:2], "lr": 1e-2, **options}, {"params": params[2:], "lr": 3e-3, "weight_decay": 0.1}]


@pytest.mark.parametrize("options", [{}, {"maximize": True, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.01}])
def test_same_update_as_adam_step_bit_for_bit(options, device, monkeypatch):
    kernel_calls = []
    monkeypatch.setattr(fast, "_KERNEL", lambda *a, **k: (kernel_calls.append(1), torch._fused_adam_(*a, **k)))
    ours, theirs = _params(device=device), _params(device=device)
    opt_ours = torch.optim.Adam(_groups(ours, **options), fused=True)
    opt_theirs = torch.optim.Adam(_groups(theirs, **options), fused=True)
    for step in range(6):
        skip = 1 if step == 3 else None  # a parameter without a gradient this step is left alone
        _grads(ours, step, skip)
        _grads(theirs, step, skip)
        if step > 0:  # from the second step on the state exists and the fast path must be the one taken
            assert fast._kernel_calls(opt_ours) is not None
        fast.adam_step(opt_ours)
        opt_theirs.step()
        for a, b in zip(ours, theirs):
            assert torch.equal(a, b)
    for a, b in zip(ours, theirs):
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(opt_ours.state[a][key], opt_theirs.state[b][key])
    assert int(opt_ours.state[ours[1]]["step"]) == 5  # skipped once
    assert len(kernel_calls) == 2 * 5  # two groups, five steps after the first: the kernel path ran


def _stepped(**adam_options) -> torch.optim.Adam:
    params = _params()
    opt = torch.optim.Adam(params, **adam_options)
    _grads(params, 0)
    opt.step()  # creates the state
    _grads(params, 1)
    return opt


@pytest.mark.parametrize(
    "case",
    [
        "not fused",
        "amsgrad",
        "tensor lr",
        "decoupled weight decay",
        "step hook",
        "pre hook",
        "global hook",
        "scheduler",
        "fresh state",
        "sgd",
    ],
)
def test_falls_back_to_the_optimisers_own_step(case):
    calls = []
    if case == "not fused":
        opt = _stepped(fused=False)
    elif case == "amsgrad":
        opt = _stepped(fused=True, amsgrad=True)
    elif case == "tensor lr":
        opt = _stepped(fused=True, lr=torch.tensor(1e-3))
    elif case == "decoupled weight decay":
        opt = _stepped(fused=True, weight_decay=0.1, decoupled_weight_decay=True)
    elif case == "pre hook":
        opt = _stepped(fused=True)
        opt.register_step_pre_hook(lambda o, args, kwargs: calls.append(1))
    elif case == "global hook":
        opt = _stepped(fused=True)
        handle = register_optimizer_step_post_hook(lambda o, args, kwargs: calls.append(1))
    elif case == "scheduler":  # wraps opt.step to see it called, and would warn if it were not
        opt = _stepped(fused=True)
        torch.optim.lr_scheduler.StepLR(opt, step_size=1)
    elif case == "sgd":
        params = _params()
        opt = torch.optim.SGD(params, lr=0.1)
        _grads(params, 0)
    elif case == "fresh state":  # the first step: the state does not exist yet
        params = _params()
        opt = torch.optim.Adam(params, fused=True)
        _grads(params, 0)
    else:
        opt = _stepped(fused=True)
        opt.register_step_post_hook(lambda o, args, kwargs: calls.append(1))
    try:
        assert fast._kernel_calls(opt) is None
        before = [p.detach().clone() for group in opt.param_groups for p in group["params"]]
        fast.adam_step(opt)
    finally:
        if case == "global hook":
            handle.remove()
    after = [p for group in opt.param_groups for p in group["params"]]
    assert all(not torch.equal(a, b) for a, b in zip(before, after))  # the optimiser's own step ran
    assert calls == ([1] if "hook" in case else [])
    if case == "scheduler":
        assert opt._opt_called  # the scheduler saw its step


def test_flush_zeroes_the_subnormal_moments_and_nothing_else():
    opt = _stepped(fused=True)
    tiny = torch.finfo(torch.float32).tiny
    values = torch.tensor([1e-39, -1e-39, tiny, -tiny, 2 * tiny, -2 * tiny, 0.0, 1e-3, -5.0, float("nan")])
    expected = torch.tensor([0.0, 0.0, 0.0, 0.0, 2 * tiny, -2 * tiny, 0.0, 1e-3, -5.0, float("nan")])
    state = opt.state[opt.param_groups[0]["params"][1]]  # the (5,) bias
    state["exp_avg"].copy_(values[:5])
    state["exp_avg_sq"].copy_(values[5:].abs())
    step = state["step"].clone()
    fast.flush_subnormal_moments(opt)
    torch.testing.assert_close(state["exp_avg"], expected[:5], rtol=0, atol=0)
    torch.testing.assert_close(state["exp_avg_sq"], expected[5:].abs(), rtol=0, atol=0, equal_nan=True)
    assert torch.equal(state["step"], step)


def test_the_trainer_flushes_every_64_steps_of_the_run(tmp_path, monkeypatch):
    from variational import vae

    steps, flushed_after = [], []  # flushed_after: how many steps had been taken at each flush
    monkeypatch.setattr(
        fastpath,
        "flush_subnormal_moments",
        lambda opt: flushed_after.append(len(steps) + 1) if isinstance(opt, torch.optim.Adam) else None,
    )
    cfg = vae.VAEConfig(hidden=[16], latent_dim=2, epochs=2, batch_size=8, seed=0)
    vae.train(cfg, tmp_path / "run", progress=False, log=lambda m: None, on_step=lambda e, s, v: steps.append(s))
    per_epoch = len(steps) // 2
    assert per_epoch % 64 != 0  # so counting per epoch would flush elsewhere
    assert flushed_after == list(range(64, len(steps) + 1, 64))
