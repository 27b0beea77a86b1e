"""Constraints that torch.distributions lacks, with their bijections, for the spec of a `vi.Model`.

`ordered`: vectors with x_1 < x_2 < ... < x_k, such as the locations of a mixture's components kept
in order (which removes label switching) or ordinal cut-points. Its bijection from R^k is Stan's
(Stan Reference Manual, "Ordered vector"): y_1 = x_1, y_i = y_{i-1} + exp(x_i).

`bijection(constraint)` is `torch.distributions.biject_to` with these added. `vi.Model` looks every
constraint up through it; torch's global `biject_to` registry is left as it is, so importing this
module changes nothing for other code.

Example:
    >>> import torch
    >>> from variational import vi
    >>> from variational.vi.constraints import bijection, ordered
    >>> bijection(ordered)(torch.tensor([0.0, 0.0, 1.0]))
    tensor([0.0000, 1.0000, 3.7183])
    >>> m = vi.Model(lambda p: -(p["mu"] ** 2).sum(), {"mu": (ordered, (2,))})
    >>> bool((m.constrain(torch.randn(5, 2))["mu"].diff(dim=-1) > 0).all())
    True
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Transform, biject_to, constraints
from torch.distributions.constraints import Constraint

__all__ = ["Ordered", "OrderedTransform", "bijection", "ordered"]


class Ordered(Constraint):
    """Vectors (the last dim) in strictly increasing order."""

    event_dim = 1

    def check(self, value: Tensor) -> Tensor:
        return (value[..., 1:] > value[..., :-1]).all(-1)

    def __repr__(self) -> str:
        return "Ordered()"


ordered = Ordered()


class OrderedTransform(Transform):
    """R^k -> ordered vectors: y = cumsum([x_1, exp(x_2), ..., exp(x_k)]).

    The Jacobian is lower triangular with diagonal (1, exp(x_2), ..., exp(x_k)), so
    log |det J| = x_2 + ... + x_k.
    """

    domain = constraints.real_vector
    codomain = ordered
    bijective = True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OrderedTransform)

    def _call(self, x: Tensor) -> Tensor:
        return torch.cat([x[..., :1], x[..., 1:].exp()], -1).cumsum(-1)

    def _inverse(self, y: Tensor) -> Tensor:
        return torch.cat([y[..., :1], (y[..., 1:] - y[..., :-1]).log()], -1)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return x[..., 1:].sum(-1)


# Our constraints' bijections, looked up before torch's registry (a local table, not biject_to.register).
_BIJECTIONS: dict[type, type[Transform]] = {Ordered: OrderedTransform}


def bijection(constraint: Constraint) -> Transform:
    """The bijection from unconstrained space onto `constraint`: ours where we define one, else torch's."""
    own = _BIJECTIONS.get(type(constraint))
    return own() if own is not None else biject_to(constraint)
