"""`opt.step()` for a fused `torch.optim.Adam`, without the optimiser's per-step Python.

`Adam.step` wraps its fused kernel in bookkeeping that costs more than the kernel's own launch for
a small model: grad-mode and profiler contexts, hook dispatch, lazy state checks and a regrouping of
the tensors by device and dtype (docs/design/cpu-fast-path.md). Where the optimiser is in the plain state that
the trainer makes (fused, no AMSGrad, no hooks, float learning rate, one device and dtype per
group, state already created, `step` not wrapped by a learning-rate scheduler), `adam_step` calls
the same kernel with the same arguments that `Adam.step` would, so parameters and state come out
identical bit for bit (tests/vae/test_adam_step.py); in every other case it calls `opt.step()`.
What the fast path leaves out is the profiler's `Optimizer.step#Adam.step` range.
"""

from __future__ import annotations

import torch
from torch.optim import optimizer as _optimizer

# The kernel Adam.step(fused=True) calls (torch/optim/adam.py, _fused_adam); None if a torch
# version lacks it, and then every step goes through opt.step().
_KERNEL = getattr(torch, "_fused_adam_", None)


def adam_step(opt: torch.optim.Optimizer) -> None:
    """One optimiser step; the fast path for a plain fused Adam, `opt.step()` otherwise."""
    calls = _kernel_calls(opt)
    if calls is None:
        opt.step()
        return
    # Inference mode: the in-place updates of ordinary tensors skip autograd's checks (a measurable
    # share of a small step).
    with torch.inference_mode():
        for params, grads, exp_avgs, exp_avg_sqs, steps, group in calls:
            beta1, beta2 = group["betas"]
            torch._foreach_add_(steps, 1)
            _KERNEL(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                [],
                steps,
                amsgrad=False,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=group["maximize"],
                grad_scale=None,
                found_inf=None,
            )


def _kernel_calls(opt: torch.optim.Optimizer) -> list[tuple] | None:
    """Per parameter group, the kernel's tensor lists; None where only opt.step() does the right thing."""
    # "step" in vars(opt): the instance's own step, such as the wrapper an LR scheduler installs to see it called
    if (
        _KERNEL is None
        or type(opt) is not torch.optim.Adam
        or "step" in vars(opt)
        or opt._optimizer_step_pre_hooks
        or opt._optimizer_step_post_hooks
        or _optimizer._global_optimizer_pre_hooks
        or _optimizer._global_optimizer_post_hooks
        or getattr(opt, "grad_scale", None) is not None
        or getattr(opt, "found_inf", None) is not None
    ):
        return None
    calls = []
    for group in opt.param_groups:
        if (
            not group["fused"]
            or group["amsgrad"]
            or group["capturable"]
            or group["differentiable"]
            or group.get("decoupled_weight_decay", False)
            or isinstance(group["lr"], torch.Tensor)
            or any(isinstance(b, torch.Tensor) for b in group["betas"])
        ):
            return None
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            continue
        first = params[0]
        states = []
        for p in params:
            state = opt.state.get(p)
            # No state yet (the first step creates it), or a tensor the kernel would not take in one call.
            if (
                not state
                or p.grad.is_sparse
                or p.is_complex()
                or p.device != first.device
                or p.dtype != first.dtype
                or p.grad.dtype != p.dtype
            ):
                return None
            states.append(state)
        calls.append(
            (
                params,
                [p.grad for p in params],
                [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states],
                [s["step"] for s in states],
                group,
            )
        )
    return calls


def flush_subnormal_moments(opt: torch.optim.Optimizer) -> None:
    """Set Adam's moment estimates that have decayed to the smallest normal float or below to zero.

    A weight whose gradient stays exactly zero (the first layer's weights for a pixel that is
    blank in every image seen lately) has its first moment multiplied by beta1 every step, so it
    sinks through the subnormal floats (below 1.2e-38 in float32) on its way to zero; x86 CPUs
    take a slow path for each (docs/design/cpu-fast-path.md has the counts and times). Zeroing them
    is what flush-to-zero arithmetic (the mode TensorFlow runs its CPU threads
    in) does. A flushed first moment would have moved its parameter by less than lr * 1.2e-38 / eps
    a step (1.2e-33 for the reference model), and by less than ten times that over all later steps
    (beta1 = 0.9). NaNs stay NaNs. CPU tensors only; one pass over each moment.
    """
    with torch.no_grad():
        for state in opt.state.values():
            for key in ("exp_avg", "exp_avg_sq"):
                t = state.get(key)
                if isinstance(t, torch.Tensor) and t.is_floating_point() and t.device.type == "cpu":
                    torch.hardshrink(t, torch.finfo(t.dtype).tiny, out=t)  # |t| <= tiny -> 0
