"""A model for general VI: a log joint density over named, constrained parameters.

Variational families live on R^d; `Model` maps an unconstrained vector z in R^d to the named,
constrained parameters through `torch.distributions.biject_to` (extended by
`variational.vi.constraints`, e.g. with ordered vectors) and adds the log |Jacobian|, so
that `log_density(z) = log p(x, T(z)) + log |det dT/dz|` is a density on R^d.

Two ways to write a model:

* Full data: ``Model(log_joint, spec)`` with ``log_joint(params) -> scalar``, or
  ``Model(log_joint, spec, data=data)`` with ``log_joint(params, data) -> scalar``.
* Minibatch (stochastic VI on large data): ``Model(spec=spec, data=data, log_prior=lp,
  log_lik=ll)``, where ``log_prior(params)`` is the log prior and ``log_lik(params, batch)`` is the
  summed log likelihood of the rows in ``batch`` (a dict of tensors whose first dim indexes the
  N data points). On a batch of B rows the estimate log_prior + (N / B) * log_lik(params, batch)
  is unbiased for the full log joint; `fit(..., batch_size=B)` uses it.

`params` is a dict of constrained tensors for ONE draw; many draws are evaluated at once with
`torch.func.vmap`. Functions vmap cannot take (data-dependent Python control flow, `.item()`)
fall back to a loop over draws, with one warning.

Example:
    >>> import torch
    >>> from torch.distributions import constraints, Normal
    >>> y = torch.tensor([0.3, -1.2, 0.8])
    >>> def log_joint(p):
    ...     return (Normal(0, 10).log_prob(p["mu"]) + Normal(0, 1).log_prob(p["tau"])
    ...             + Normal(p["mu"], p["tau"]).log_prob(y).sum())
    >>> m = Model(log_joint, {"mu": constraints.real, "tau": constraints.positive})
    >>> m.dim
    2
    >>> m.log_density(torch.zeros(4, 2)).shape
    torch.Size([4])
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Transform
from torch.distributions.constraints import Constraint

from variational.errors import ModelError
from variational.vi.constraints import bijection

__all__ = ["Model", "ModelError", "ParamInfo"]

Params = dict[str, Tensor]


@dataclass(frozen=True)
class ParamInfo:
    """One named parameter: its constraint, constrained shape, bijection and place in z."""

    name: str
    constraint: Constraint
    shape: torch.Size
    transform: Transform
    unconstrained_shape: torch.Size
    offset: int

    @property
    def size(self) -> int:
        return math.prod(self.unconstrained_shape)


def _parse_spec(spec: Mapping[str, Any]) -> list[ParamInfo]:
    """Turn {name: constraint | (constraint, shape)} into ordered ParamInfo records."""
    if not isinstance(spec, Mapping) or not spec:
        raise ModelError("spec must be a non-empty dict {name: constraint or (constraint, shape)}")
    infos, offset = [], 0
    for name, value in spec.items():
        constraint, shape = value if isinstance(value, tuple) else (value, ())
        if not isinstance(constraint, Constraint):
            raise ModelError(f"parameter '{name}': {constraint!r} is not a torch.distributions constraint")
        shape = torch.Size((shape,) if isinstance(shape, int) else shape)
        try:
            transform = bijection(constraint)
            inv_shape = torch.Size(transform.inverse_shape(shape))
        except (NotImplementedError, ValueError, IndexError) as e:
            raise ModelError(
                f"parameter '{name}': no bijection to constraint {constraint} with shape {tuple(shape)} ({e})"
            ) from None
        info = ParamInfo(str(name), constraint, shape, transform, inv_shape, offset)
        infos.append(info)
        offset += info.size
    return infos


class _SpecParams(dict):
    """A params dict whose missing keys raise a ModelError naming the parameter and the spec.

    `dict.__getitem__` calls `__missing__`, so `p["x"]` is checked however the dict is read after
    (`get`, `items`, `**p` see only the spec's names, which is right).
    """

    def __missing__(self, key: str) -> Tensor:
        raise ModelError(f"log_joint reads parameter '{key}', which is not in the spec (spec has {sorted(self)})")


class Model:
    """A log joint density over named constrained parameters (see the module docstring)."""

    def __init__(
        self,
        log_joint: Callable[..., Tensor] | None = None,
        spec: Mapping[str, Any] | None = None,
        data: Mapping[str, Tensor] | None = None,
        *,
        log_prior: Callable[[Params], Tensor] | None = None,
        log_lik: Callable[[Params, Mapping[str, Tensor]], Tensor] | None = None,
        name: str = "model",
    ) -> None:
        if (log_joint is None) == (log_prior is None and log_lik is None):
            raise ModelError("give either log_joint, or both log_prior and log_lik (minibatch form)")
        if log_joint is None and (log_prior is None or log_lik is None or data is None):
            raise ModelError("the minibatch form needs log_prior, log_lik and data together")
        self.params = _parse_spec(spec if spec is not None else {})
        self.log_joint, self.log_prior, self.log_lik = log_joint, log_prior, log_lik
        self.data = dict(data) if data is not None else None
        self.n_data = self._count_rows(self.data) if log_lik is not None else None
        self.name = name
        self._vectorised: bool | None = None  # decided on the first batched evaluation
        self._batchable: dict[str, bool] = {}  # per parameter: does its bijection take a batch (_takes_batches)

    # ----- layout of the unconstrained vector -------------------------------------------------
    @property
    def dim(self) -> int:
        """Length d of the unconstrained vector z."""
        return sum(p.size for p in self.params)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    @property
    def is_minibatch(self) -> bool:
        return self.log_lik is not None

    def element_names(self) -> list[str]:
        """One label per constrained scalar, e.g. ['mu', 'theta[0]', ..., 'theta[7]']."""
        labels = []
        for p in self.params:
            if len(p.shape) == 0:
                labels.append(p.name)
            else:
                labels += [f"{p.name}[{','.join(map(str, i))}]" for i in _indices(p.shape)]
        return labels

    def coordinate_name(self, index: int) -> str:
        """The parameter that coordinate `index` of z belongs to."""
        return next(p.name for p in self.params if p.offset <= index < p.offset + p.size)

    def constrain(self, z: Tensor) -> Params:
        """Map z of shape (..., d) to {name: tensor of shape (..., *shape)} on the constrained scale."""
        return {p.name: p.transform(self._slice(z, p)) for p in self.params}

    def unconstrain(self, params: Mapping[str, Any], dtype: torch.dtype = torch.float64) -> Tensor:
        """Inverse of `constrain` for ONE draw: {name: value} -> z of shape (d,), in `dtype`."""
        unknown = sorted(set(params) - set(self.names))
        if unknown:
            raise ModelError(f"init names parameter '{unknown[0]}', which is not in the spec (spec has {self.names})")
        parts = []
        for p in self.params:
            if p.name not in params:
                raise ModelError(f"init is missing parameter '{p.name}'")
            parts.append(p.transform.inv(self._init_value(p, params[p.name], dtype)).reshape(-1))
        return torch.cat(parts)

    @staticmethod
    def _init_value(p: ParamInfo, given: Any, dtype: torch.dtype) -> Tensor:
        """A constrained init value of p's shape inside p's support, or a ModelError naming p."""
        value = torch.as_tensor(given, dtype=dtype)
        try:
            value = value.expand(p.shape)
        except RuntimeError:
            raise ModelError(
                f"init for parameter '{p.name}' has shape {tuple(value.shape)}, but '{p.name}' has shape "
                f"{tuple(p.shape)}: give one value or {math.prod(p.shape)}"
            ) from None
        inside = p.constraint.check(value)
        if not bool(torch.as_tensor(inside).all()):
            raise ModelError(
                f"init {p.name}={_short(value)} is outside the support of '{p.name}' "
                f"(constraint {_constraint_name(p.constraint)})"
            )
        return value

    def _slice(self, z: Tensor, p: ParamInfo) -> Tensor:
        return z[..., p.offset : p.offset + p.size].reshape(z.shape[:-1] + p.unconstrained_shape)

    def _constrain_one(self, z: Tensor) -> tuple[Params, Tensor]:
        """One draw z (d,) -> (constrained params, log |det J| as a scalar)."""
        params, log_det = {}, z.new_zeros(())
        for p in self.params:
            params[p.name], ld = _bijection_one(p.transform, self._slice(z, p))
            log_det = log_det + ld
        return params, log_det

    # ----- densities -----------------------------------------------------------------------------
    def _log_joint(self, params: Params, batch: Mapping[str, Tensor] | None = None, scale: float = 1.0) -> Tensor:
        """log p(x, params): the user's log_joint, or log_prior + scale * log_lik on `batch` (default: all data)."""
        if self.log_joint is not None:
            return self.log_joint(params) if self.data is None else self.log_joint(params, self.data)
        return self.log_prior(params) + scale * self.log_lik(params, batch if batch is not None else self.data)

    def _constrain_batch(self, z: Tensor) -> tuple[Params, Tensor]:
        """Draws z (S, d) -> (constrained params, each (S, *shape); log |det J| of shape (S,)).

        Outside vmap where the bijection takes a batch dimension in front (most do): plain batched ops
        cost less than the same ops under vmap (docs/design/vi-notes.md).
        """
        params, log_det = {}, z.new_zeros(z.shape[:1])
        for p in self.params:
            u = self._slice(z, p)
            if self._takes_batches(p, z.dtype):
                params[p.name], ld = _bijection_batch(p.transform, u)
            else:
                params[p.name], ld = torch.func.vmap(functools.partial(_bijection_one, p.transform))(u)
            log_det = log_det + ld
        return params, log_det

    def _takes_batches(self, p: ParamInfo, dtype: torch.dtype) -> bool:
        """Does p's bijection give, on a batch of draws, what it gives one draw at a time?

        Not for every one: cat and stack constraints split at a dimension counted from the front,
        which a batch dimension in front would shift. Probed once per parameter, on three draws.
        """
        if p.name not in self._batchable:
            u = torch.randn((3, *p.unconstrained_shape), generator=torch.Generator().manual_seed(0), dtype=dtype)
            try:
                x, ld = _bijection_batch(p.transform, u)
                one = [_bijection_one(p.transform, ui) for ui in u]
                ok = (
                    x.shape == (3, *p.shape)
                    and ld.shape == (3,)
                    and torch.allclose(x, torch.stack([xi for xi, _ in one]))
                    and torch.allclose(ld, torch.stack([li for _, li in one]))
                )
            except (RuntimeError, ValueError, IndexError, AssertionError):
                ok = False
            self._batchable[p.name] = bool(ok)
        return self._batchable[p.name]

    def log_density(self, z: Tensor, batch: Mapping[str, Tensor] | None = None) -> Tensor:
        """log p(x, T(z)) + log|J_T(z)| for z of shape (S, d): a tensor of shape (S,).

        With a minibatch model and `batch` given, the likelihood is scaled by N / B.
        """
        if z.shape[0] == 0:
            return z.new_zeros(0)
        scale = 1.0 if batch is None else self.n_data / self._count_rows(batch)
        params, log_det = self._constrain_batch(z)
        one = lambda params_i: self._log_joint(params_i, batch, scale)  # noqa: E731
        if self._vectorised is None:
            self._vectorised = self._try_vmap(one, params)
        # reshape: check() accepts a log_joint that returns shape (1,) as well as a scalar
        if self._vectorised:
            return torch.func.vmap(one)(params).reshape(z.shape[0]) + log_det
        return torch.stack([one(_draw(params, i)) for i in range(z.shape[0])]).reshape(z.shape[0]) + log_det

    def _try_vmap(self, one: Callable[[Params], Tensor], params: Params) -> bool:
        """Does vmap take this log density and agree with a plain loop? Warn once if not."""
        # copies: a log_joint that edits its inputs in place must not change the real evaluation's
        first_two = {k: v[:2].detach().clone() for k, v in params.items()}
        try:
            with torch.no_grad():
                batched = torch.func.vmap(one)(first_two)
                looped = torch.stack([one(_draw(first_two, i)) for i in range(next(iter(first_two.values())).shape[0])])
            if torch.allclose(batched, looped, rtol=1e-5, atol=1e-6, equal_nan=True):
                return True
            reason = "vmap and a loop disagree"
        except Exception as e:  # noqa: BLE001 -- any failure under vmap means: evaluate one draw at a time
            reason = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        warnings.warn(
            f"{self.name}: log density cannot be vectorised with torch.func.vmap ({reason}); "
            "evaluating draws one at a time, which is slower",
            RuntimeWarning,
            stacklevel=3,
        )
        return False

    # ----- checks --------------------------------------------------------------------------------
    def check(self, z: Tensor) -> float:
        """Evaluate one draw z (d,); raise ModelError naming the parameter if the spec or value is bad."""
        params, log_det = self._constrain_one(z.detach())
        # Leaves that require grad: a parameter the log density does not depend on gets no gradient,
        # however log_joint reads the dict (p["x"], p.get, p.items(), f(**p), ...).
        # (clones of the leaves are passed, so log_joint may still modify its inputs in place).
        leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        with torch.enable_grad():
            value = self._call_for_check(_SpecParams({k: v.clone() for k, v in leaves.items()}))
            self._check_scalar(value)
            unread = self._unused(value, leaves)
        if unread:
            raise ModelError(
                f"parameter '{unread[0]}' is in the spec but the log density does not depend on it "
                "(never read, or read only through non-differentiable operations)"
            )
        total = float(value.detach().reshape(()) + log_det)
        if not math.isfinite(total):
            raise ModelError(self._explain_non_finite(z.detach(), params, total))
        return total

    def _check_scalar(self, value: Any) -> None:
        if not isinstance(value, Tensor) or value.numel() != 1:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ModelError(
                f"log density must return a scalar tensor, got {shape}; check the shapes in the spec ({self._shapes()})"
            )

    def _unused(self, value: Tensor, leaves: Params) -> list[str]:
        """Names whose gradient autograd reports as absent (no path from the parameter to the value)."""
        if not value.requires_grad:
            return list(leaves)
        grads = torch.autograd.grad(value.reshape(()), list(leaves.values()), allow_unused=True)
        return [name for name, g in zip(leaves, grads) if g is None]

    def _call_for_check(self, params: _SpecParams) -> Tensor:
        try:
            return self._log_joint(params)
        except ModelError:
            raise
        except (RuntimeError, IndexError, KeyError, TypeError, ValueError) as e:
            culprit = self._guess_shape_culprit(str(e))
            where = f"parameter '{culprit}' (shape {tuple(self._info(culprit).shape)}): " if culprit else ""
            raise ModelError(
                f"log_joint failed: {where}{type(e).__name__}: {str(e).splitlines()[0]}; spec shapes {self._shapes()}"
            ) from e

    def _explain_non_finite(self, z: Tensor, params: Params, total: float) -> str:
        """Name the parameters that, moved alone, make the log density finite; else list the values."""
        bad = [p.name for p in self.params if self._finite_when_moved(z, p)]
        shown = [(k, v) for k, v in params.items() if not bad or k in bad]
        values = ", ".join(f"{k}={_short(v)}" for k, v in shown)
        who = (
            ("parameter " if len(bad) == 1 else "parameters ") + ", ".join(f"'{b}'" for b in bad)
            if bad
            else "the parameters"
        )
        return f"log density is {total} at the initial point: check {who} ({values}); pass init= (CLI: --init NAME=VALUE) with values inside the support"

    def _finite_when_moved(self, z: Tensor, p: ParamInfo) -> bool:
        """Does shifting only p's unconstrained coordinates (by +-1, +-3) give a finite log density?"""
        for shift in (1.0, -1.0, 3.0, -3.0):
            moved = z.clone()
            moved[p.offset : p.offset + p.size] += shift
            try:
                with torch.no_grad():
                    params, log_det = self._constrain_one(moved)
                    value = self._call_for_check(_SpecParams(params))
                if math.isfinite(float(value.reshape(()) + log_det)):
                    return True
            except (ModelError, RuntimeError, ValueError):
                continue
        return False

    def _guess_shape_culprit(self, message: str) -> str | None:
        """The one parameter with a dimension whose size appears in a size-mismatch message, if unique."""
        sizes = {int(s) for s in re.findall(r"\d+", message)}
        hits = [p.name for p in self.params if any(d in sizes for d in p.shape)]
        return hits[0] if len(hits) == 1 else None

    def _info(self, name: str) -> ParamInfo:
        return next(p for p in self.params if p.name == name)

    def _shapes(self) -> str:
        return ", ".join(f"{p.name}: {tuple(p.shape)}" for p in self.params)

    @staticmethod
    def _count_rows(data: Mapping[str, Tensor] | None) -> int:
        rows = {k: len(v) for k, v in (data or {}).items()}
        if not rows or len(set(rows.values())) != 1:
            raise ModelError(f"minibatch data must be a non-empty dict of tensors with the same first dim, got {rows}")
        return next(iter(rows.values()))

    def __repr__(self) -> str:
        return f"Model({self.name!r}, dim={self.dim}, params=[{self._shapes()}])"


def _constraint_name(constraint: Constraint) -> str:
    """torch's repr without an empty '()': 'GreaterThan(lower_bound=0.0)', 'Simplex'."""
    text = repr(constraint)
    return text[:-2] if text.endswith("()") else text


def _indices(shape: torch.Size) -> list[tuple[int, ...]]:
    return [
        tuple(int(i) for i in idx)
        for idx in torch.cartesian_prod(*[torch.arange(s) for s in shape]).reshape(-1, len(shape))
    ]


def _short(v: Tensor) -> str:
    flat = v.detach().reshape(-1)
    return (
        f"{flat[0].item():.4g}"
        if flat.numel() == 1
        else f"[{', '.join(f'{x:.3g}' for x in flat[:4].tolist())}{', ...' if flat.numel() > 4 else ''}]"
    )


def _draw(params: Params, i: int) -> Params:
    """Draw i of batched params."""
    return {k: v[i] for k, v in params.items()}


def _bijection_one(transform: Transform, u: Tensor) -> tuple[Tensor, Tensor]:
    """One draw's constrained value and its log |det J| as a scalar."""
    x = transform(u)
    return x, transform.log_abs_det_jacobian(u, x).sum()


def _bijection_batch(transform: Transform, u: Tensor) -> tuple[Tensor, Tensor]:
    """Draws u (S, ...) -> constrained values and log |det J| of shape (S,), the batch in front."""
    x = transform(u)
    ld = transform.log_abs_det_jacobian(u, x)
    return x, ld.flatten(1).sum(1) if ld.dim() > 1 else ld
