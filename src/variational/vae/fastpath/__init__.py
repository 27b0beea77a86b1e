"""The VAE trainer's fast step, fenced in one place: everything here is a speed-up, none of it a result.

The trainer takes one step at a time from `training_step(model, optimizer)`. Where the fast path
applies, a step is:

- `fused.loss_and_gradients`: the loss and its gradient written out by hand for MLPs with a
  Bernoulli decoder trained on the ELBO, straight into `.grad` buffers kept from step to step;
- `adam.adam_step`: the fused Adam kernel called without `Adam.step`'s per-step Python;
- `adam.flush_subnormal_moments` every `FLUSH_EVERY` steps of the run;
- and, on CPU, `memory.keep_freed_memory` (glibc keeps freed blocks for the next step).

Everywhere else (another model, an IWAE objective, a hook, an optimiser other than a plain fused
Adam) the same callable runs autograd's backward and `optimizer.step()`. The hand-written parts use
torch internals (`torch._fused_adam_`, the optimiser's hook registries and state layout, the module
hook registries, `aten.threshold_backward`), so they run only on the torch versions they were tested
with (`TESTED_TORCH`); on any other version the plain step runs and a one-time warning says so.
The two paths give the same loss and gradients up to float rounding (tests/vae/test_fused.py), and
with the fast path a run is reproduced bit for bit on resume (tests/vae/test_train.py).
docs/design/cpu-fast-path.md says what each part saves and what was tried.
"""

from __future__ import annotations

import math
import re
import warnings

import torch
from torch import Tensor

from variational.errors import DataError
from variational.vae.fastpath import fused
from variational.vae.fastpath.adam import adam_step, flush_subnormal_moments
from variational.vae.fastpath.memory import keep_freed_memory
from variational.vae.model import VAE, standard_normal

__all__ = ["FLUSH_EVERY", "TESTED_TORCH", "TrainingStep", "fast_path_supported", "keep_freed_memory", "training_step"]

# The (major, minor) torch releases, first and last inclusive, whose internals the fast path was
# tested against (tests/vae/test_fused.py, test_adam_step.py, test_train.py).
TESTED_TORCH = ((2, 13), (2, 13))
# Steps between flushes of Adam's subnormal moments, counted over the whole run so that a resumed
# run flushes where the uninterrupted one does. One flush is a pass over the moments; in 64 steps
# only a few hundred new subnormals build up (docs/design/cpu-fast-path.md).
FLUSH_EVERY = 64

_noted = False


def fast_path_supported(version: str | None = None) -> bool:
    """Whether this torch release (default: the one imported) lies in `TESTED_TORCH`."""
    found = re.match(r"(\d+)\.(\d+)", version or torch.__version__)
    return found is not None and TESTED_TORCH[0] <= (int(found[1]), int(found[2])) <= TESTED_TORCH[1]


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps_done: int = 0) -> TrainingStep:
    """The trainer's step for `model` and `optimizer`; `steps_done` counts the run's earlier steps.

    On CPU it makes glibc keep freed memory for reuse, process-wide (`memory.keep_freed_memory`).

    >>> model = VAE(VAEConfig(hidden=[8], latent_dim=2), (4, 4))  # doctest: +SKIP
    >>> step = training_step(model, torch.optim.Adam(model.parameters(), fused=True))  # doctest: +SKIP
    >>> loss = step(torch.rand(16, 4, 4), beta=1.0, generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
    """
    if next(model.parameters()).device.type == "cpu":
        keep_freed_memory()
    return TrainingStep(model, optimizer, steps_done, fast=_fast_path_or_note())


class TrainingStep:
    """`step(x, beta, generator) -> loss`: the gradient of -mean(objective) over the batch `x`, then
    an optimiser step if the loss is finite (a NaN leaves the parameters as they were).

    `gradients` and `update` are the two halves, for a caller (the data-parallel trainer) that
    forms the gradient another way.
    """

    def __init__(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps_done: int = 0, fast: bool = True
    ):
        self.model, self.optimizer, self.steps_done, self.fast = model, optimizer, steps_done, fast

    def __call__(self, x: Tensor, beta: float = 1.0, generator: torch.Generator | None = None) -> float:
        loss = self.gradients(x, beta, generator)
        if math.isfinite(loss):
            self.update()
        return loss

    def gradients(self, x: Tensor, beta: float = 1.0, generator: torch.Generator | None = None) -> float:
        """The batch's loss -mean(objective); its gradient replaces what each parameter's `.grad` held."""
        if x.shape[0] == 0:
            raise DataError("a training step needs a batch of at least one image (the loss is a mean over it)")
        layers = _fused_layers(self.model, x) if self.fast else None
        if layers is not None:
            eps = standard_normal((x.shape[0], self.model.latent_dim), generator, layers.encoder[-1].weight)
            return fused.loss_and_gradients(layers, x.flatten(1), eps, beta)
        loss = -self.model.objective(x, beta=beta, generator=generator).mean()
        self.model.zero_grad(set_to_none=True)
        loss.backward()
        return loss.item()

    def update(self) -> None:
        """The optimiser's step from the gradients in `.grad`."""
        self.steps_done += 1
        if not self.fast:
            self.optimizer.step()
            return
        adam_step(self.optimizer)
        if self.steps_done % FLUSH_EVERY == 0:
            flush_subnormal_moments(self.optimizer)


def _fused_layers(model: torch.nn.Module, x: Tensor) -> fused.MLPLayers | None:
    """The layers for `fused` where it computes exactly what the model's objective would, else None.

    Checked at each step, so a swapped decoder, a hook, a parametrisation (weight norm, pruning),
    a subclass's own objective, the IWAE objective, autocast or an input that needs a gradient all
    take autograd.
    """
    if not isinstance(model, VAE) or model.config.iw_k != 1:
        return None
    if x.requires_grad or torch.is_autocast_enabled(x.device.type):
        return None
    if any(getattr(type(model), name) is not getattr(VAE, name) for name in ("elbo", "objective", "decode")):
        return None
    return fused.layers_of(model.encoder, model.decoder, model.likelihood)


def _fast_path_or_note() -> bool:
    """Whether the fast path may run; outside the tested torch range, says once that it will not."""
    global _noted
    if fast_path_supported():
        return True
    if not _noted:
        _noted = True
        first, last = (".".join(map(str, v)) for v in TESTED_TORCH)
        warnings.warn(
            f"torch {torch.__version__} is outside the range the VAE trainer's fast step was tested with "
            f"({first} to {last}); training takes the plain autograd step and optimizer.step() "
            "(the same loss up to float rounding, slower)",
            RuntimeWarning,
            stacklevel=3,
        )
    return False
