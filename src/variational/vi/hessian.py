"""Exact Hessian of the fixed-draw ELBO in q's parameters, built from the per-draw Hessians of log p.

With z_k = T_phi(eps_k), the fixed-draw ELBO F(phi) = (1/M) sum_k log p(z_k) + H[q_phi] has Hessian
(chain rule)

    d2F/dphi2 = (1/M) sum_k J_k^T H_k J_k  +  d2/dphi2 [ (1/M) sum_k g_k . T_phi(eps_k) + H[q_phi] ]

with J_k = dz_k/dphi, and g_k, H_k the gradient and Hessian of log p at z_k held fixed in the second
term. The per-draw H_k cost d Hessian-vector products of the batched log density (one per
coordinate of z, every draw at once, since the draws do not interact) instead of one per
variational parameter (2d for mean field, d + d(d+1)/2 for full rank); J_k and the second term only
differentiate q's transform and entropy, which never touch the model.

Example:
    >>> import torch
    >>> from torch.distributions import Normal, constraints
    >>> from variational.core.families import make_family
    >>> from variational.vi.model import Model
    >>> m = Model(lambda p: Normal(0., 2.).log_prob(p["x"]), {"x": constraints.real})
    >>> q = make_family("meanfield", 1, scale=1.0).double()
    >>> fixed_draw_hessian(m, q, torch.tensor([[1.0], [-1.0]], dtype=torch.float64)).tolist()
    [[-0.25, 0.0], [0.0, -0.5]]
"""

from __future__ import annotations

import torch
from torch import Tensor

from variational.core.families import Family
from variational.vi.model import Model

__all__ = ["fixed_draw_hessian", "jacobian_of_draws", "log_density_hessians", "split_columns"]


def log_density_hessians(model: Model, z: Tensor) -> tuple[Tensor, Tensor]:
    """Per-draw gradients (M, d) and Hessians (M, d, d) of log p at the rows of z."""
    z = z.detach().requires_grad_(True)
    with torch.enable_grad():
        grad = torch.autograd.grad(model.log_density(z).sum(), z, create_graph=True)[0]
        # Draws do not interact, so direction e_j at every draw at once gives row j of every draw's Hessian.
        basis = torch.eye(z.shape[1], dtype=z.dtype, device=z.device).unsqueeze(1).expand(-1, z.shape[0], -1)
        rows = _batched_grad(grad, [z], basis)[0]
    return grad.detach(), rows.detach().transpose(0, 1)


def fixed_draw_hessian(model: Model, q: Family, eps: Tensor) -> Tensor:
    """d2F/dphi2 of the fixed-draw ELBO over q's trainable parameters (flattened in `parameters()` order)."""
    params = [p for p in q.parameters() if p.requires_grad]
    n = sum(p.numel() for p in params)
    identity = split_columns(torch.eye(n, dtype=eps.dtype, device=eps.device), params)
    with torch.enable_grad():
        z = q.transform_noise(eps)
        grad, hess = log_density_hessians(model, z)
        jac = jacobian_of_draws(z, params, identity)  # (M, d, P)
        linearised = (grad * z).sum() / eps.shape[0] + q.entropy()
        flat = torch.cat([g.reshape(-1) for g in torch.autograd.grad(linearised, params, create_graph=True)])
        second = _flatten(_batched_grad(flat, params, torch.eye(n, dtype=eps.dtype, device=eps.device)), n)
    # sum over draws and coordinates of J^T H J as one (P x M d) @ (M d x P) product
    model_part = jac.reshape(-1, n).T @ torch.bmm(hess, jac).reshape(-1, n) / eps.shape[0]
    H = (model_part + second).detach()
    return 0.5 * (H + H.T)  # exact symmetry for the trust-region solver's Cholesky factorisations


def jacobian_of_draws(z: Tensor, params: list[Tensor], directions: list[Tensor]) -> Tensor:
    """dz/dphi (M, d, P) by forward products J v, each the derivative of a linear vector-Jacobian product."""
    u = torch.zeros_like(z, requires_grad=True)
    vjp = torch.autograd.grad(z, params, grad_outputs=u, create_graph=True)  # J^T u, linear in u
    jv = _batched_grad(vjp, [u], directions)[0]  # (P, M, d)
    return jv.permute(1, 2, 0)


def split_columns(rows: Tensor, params: list[Tensor]) -> list[Tensor]:
    """Columns of `rows` (B, P) cut into per-parameter blocks of shape (B, *param.shape)."""
    out, offset = [], 0
    for p in params:
        out.append(rows[:, offset : offset + p.numel()].reshape(rows.shape[0], *p.shape))
        offset += p.numel()
    return out


def _flatten(blocks: tuple[Tensor, ...], batch: int) -> Tensor:
    return torch.cat([b.reshape(batch, -1) for b in blocks], 1)


def _batched_grad(outputs, inputs: list[Tensor], cotangents) -> tuple[Tensor, ...]:
    """Vector-Jacobian products of `outputs` with each of a batch of cotangents (zeros where unused)."""
    batch = (cotangents[0] if isinstance(cotangents, list) else cotangents).shape[0]
    try:
        grads = torch.autograd.grad(outputs, inputs, grad_outputs=cotangents, is_grads_batched=True, allow_unused=True)
    except RuntimeError:  # an op without a batching rule for its double backward: one cotangent at a time
        rows = [
            torch.autograd.grad(outputs, inputs, grad_outputs=_row(cotangents, b), retain_graph=True, allow_unused=True)
            for b in range(batch)
        ]
        grads = tuple(None if parts[0] is None else torch.stack(parts) for parts in zip(*rows))
    return tuple(
        torch.zeros(batch, *x.shape, dtype=x.dtype, device=x.device) if g is None else g for g, x in zip(grads, inputs)
    )


def _row(cotangents, b: int):
    return [c[b] for c in cotangents] if isinstance(cotangents, list) else cotangents[b]
