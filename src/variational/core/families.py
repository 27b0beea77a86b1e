"""Variational families q(z) over R^d, each a small `torch.nn.Module`.

Every family draws z = T_phi(eps) from base noise eps ~ N(0, I) (the reparameterisation trick,
Kingma and Welling 2014), so one fixed set of eps gives a deterministic objective (DADVI) and
fresh eps give the stochastic one. The common surface:

    rsample(n, generator)                  -> z (n, d)
    transform_noise(eps)                   -> z (n, d) for eps (n, noise_dim)
    rsample_and_log_prob(n, generator, stop_gradient=False) -> (z, log q(z))
    log_prob(z)                            -> (n,)
    entropy()                              -> closed form, or None (flows)
    mean(), covariance()                   -> moments (closed form for the Gaussian families)
    distribution                           -> a torch.distributions view (Gaussian families)

`stop_gradient=True` evaluates log q with the variational parameters detached while z keeps its
path to them: the sticking-the-landing estimator (Roeder, Wu and Duvenaud 2017).

Example:
    >>> import torch
    >>> q = make_family("fullrank", 3)
    >>> z, log_q = q.rsample_and_log_prob(5, torch.Generator().manual_seed(0))
    >>> z.shape, log_q.shape
    (torch.Size([5, 3]), torch.Size([5]))
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, LowRankMultivariateNormal, MultivariateNormal, Normal

from variational.core.objectives import detached_log_prob

__all__ = ["Family", "MeanField", "FullRank", "LowRank", "Flow", "FAMILIES", "make_family"]

_LOG_2PI = math.log(2 * math.pi)


class Family(nn.Module):
    """Base class: q over R^d built from standard normal noise of size `noise_dim`."""

    dim: int
    noise_dim: int

    def forward(self, z: Tensor) -> Tensor:
        return self.log_prob(z)

    def log_prob(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def transform_noise(self, eps: Tensor) -> Tensor:
        raise NotImplementedError

    def noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws of the base noise, on this family's device and dtype."""
        ref = next(self.parameters())
        return torch.randn(n, self.noise_dim, generator=generator, dtype=ref.dtype, device=ref.device)

    def rsample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.transform_noise(self.noise(n, generator))

    def rsample_and_log_prob(
        self, n: int, generator: torch.Generator | None = None, stop_gradient: bool = False
    ) -> tuple[Tensor, Tensor]:
        z = self.rsample(n, generator)
        return z, (detached_log_prob(self, z) if stop_gradient else self.log_prob(z))

    def entropy(self) -> Tensor | None:
        """Closed-form entropy H[q], or None when there is none (flows)."""
        return None

    @property
    def distribution(self) -> Distribution | None:
        return None

    def mean(self) -> Tensor:
        raise NotImplementedError

    def covariance(self) -> Tensor:
        """Covariance of q (closed form for the Gaussian families)."""
        raise NotImplementedError

    def marginal_log_scale(self) -> Tensor:
        """log sd of each coordinate of z under q (the fit watches it to detect an improper posterior)."""
        return 0.5 * self.covariance().diagonal().log()


def _location_and_log_scale(dim: int, loc: Tensor | None, scale: float | Tensor) -> tuple[nn.Parameter, nn.Parameter]:
    """q's starting location (zeros, or `loc`) and per-coordinate log scale (log `scale`), as parameters."""
    location = nn.Parameter(torch.zeros(dim) if loc is None else loc.detach().clone().reshape(dim))
    log_scale = nn.Parameter(torch.log(torch.as_tensor(scale, dtype=location.dtype)).expand(dim).clone())
    return location, log_scale


class MeanField(Family):
    """q(z) = prod_i N(z_i | m_i, s_i^2): the texts' fully factorised Gaussian."""

    def __init__(self, dim: int, loc: Tensor | None = None, scale: float | Tensor = 0.1) -> None:
        super().__init__()
        self.dim = self.noise_dim = dim
        self.loc, self.log_scale = _location_and_log_scale(dim, loc, scale)

    def transform_noise(self, eps: Tensor) -> Tensor:
        return self.loc + eps * self.log_scale.exp()

    def log_prob(self, z: Tensor) -> Tensor:
        u = (z - self.loc) * torch.exp(-self.log_scale)
        return -0.5 * (u.pow(2) + _LOG_2PI).sum(-1) - self.log_scale.sum()

    def entropy(self) -> Tensor:
        # H[N(m, diag s^2)] = sum log s + d/2 (1 + log 2 pi) (Cover and Thomas 2006, eq. 8.26).
        return self.log_scale.sum() + 0.5 * self.dim * (1 + _LOG_2PI)

    @property
    def distribution(self) -> Distribution:
        return Independent(Normal(self.loc, self.log_scale.exp()), 1)

    def mean(self) -> Tensor:
        return self.loc

    def scale(self) -> Tensor:
        return self.log_scale.exp()

    def covariance(self) -> Tensor:
        return torch.diag_embed(self.log_scale.exp().pow(2))

    def marginal_log_scale(self) -> Tensor:
        return self.log_scale


class FullRank(Family):
    """q(z) = N(m, L L^T) with L lower triangular with positive diagonal (exp of a free vector)."""

    def __init__(self, dim: int, loc: Tensor | None = None, scale: float | Tensor = 0.1) -> None:
        super().__init__()
        self.dim = self.noise_dim = dim
        self.loc, self.log_diag = _location_and_log_scale(dim, loc, scale)
        self.off_diag = nn.Parameter(torch.zeros(dim * (dim - 1) // 2, dtype=self.loc.dtype))
        self.register_buffer("_rows", torch.tril_indices(dim, dim, -1)[0], persistent=False)
        self.register_buffer("_cols", torch.tril_indices(dim, dim, -1)[1], persistent=False)

    def scale_tril(self) -> Tensor:
        L = torch.diag_embed(self.log_diag.exp())
        return L.index_put((self._rows, self._cols), self.off_diag)

    def transform_noise(self, eps: Tensor) -> Tensor:
        return self.loc + eps @ self.scale_tril().T

    def log_prob(self, z: Tensor) -> Tensor:
        u = torch.linalg.solve_triangular(self.scale_tril(), (z - self.loc).unsqueeze(-1), upper=False).squeeze(-1)
        return -0.5 * (u.pow(2) + _LOG_2PI).sum(-1) - self.log_diag.sum()

    def entropy(self) -> Tensor:
        # H[N(m, L L^T)] = log |det L| + d/2 (1 + log 2 pi) (Cover and Thomas 2006, eq. 8.26).
        return self.log_diag.sum() + 0.5 * self.dim * (1 + _LOG_2PI)

    @property
    def distribution(self) -> Distribution:
        return MultivariateNormal(self.loc, scale_tril=self.scale_tril())

    def covariance(self) -> Tensor:
        L = self.scale_tril()
        return L @ L.T

    def mean(self) -> Tensor:
        return self.loc


class LowRank(Family):
    """q(z) = N(m, W W^T + diag(d^2)) with W of shape (dim, rank): a rank-r plus diagonal covariance."""

    def __init__(self, dim: int, rank: int = 2, loc: Tensor | None = None, scale: float | Tensor = 0.1) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.dim, self.rank, self.noise_dim = dim, rank, dim + rank
        self.loc, self.log_diag = _location_and_log_scale(dim, loc, scale)
        # A small random-free start: W = 0 would be a saddle for W's gradient, so seed it with a tiny, fixed pattern.
        w = 1e-3 * torch.cos(torch.arange(dim * rank, dtype=self.loc.dtype)).reshape(dim, rank)
        self.cov_factor = nn.Parameter(w)

    def transform_noise(self, eps: Tensor) -> Tensor:
        e_diag, e_low = eps[..., : self.dim], eps[..., self.dim :]
        return self.loc + e_diag * self.log_diag.exp() + e_low @ self.cov_factor.T

    def log_prob(self, z: Tensor) -> Tensor:
        return self.distribution.log_prob(z)

    def entropy(self) -> Tensor:
        return self.distribution.entropy()

    @property
    def distribution(self) -> Distribution:
        return LowRankMultivariateNormal(self.loc, self.cov_factor, torch.exp(2 * self.log_diag))

    def covariance(self) -> Tensor:
        return self.cov_factor @ self.cov_factor.T + torch.diag_embed(torch.exp(2 * self.log_diag))

    def mean(self) -> Tensor:
        return self.loc


class Flow(Family):
    """A normalising flow: zuko's neural spline coupling flow followed by a learnable diagonal affine map.

    Coupling layers (zuko NSF with passes=2; Durkan et al. 2019) are cheap in both directions, so
    sampling and density evaluation each take one pass. The final affine map z = m + s * y carries
    the location and scale, so the flow can start from a Gaussian fit (`loc`, `scale`).
    """

    def __init__(
        self,
        dim: int,
        transforms: int = 3,
        hidden: int = 32,
        bins: int = 8,
        loc: Tensor | None = None,
        scale: float | Tensor = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        import zuko  # a heavy import, needed only for this family

        self.dim = self.noise_dim = dim
        with _fork_rng(generator):
            self.flow = zuko.flows.NSF(
                dim, transforms=transforms, bins=bins, passes=2 if dim > 1 else None, hidden_features=[hidden, hidden]
            )
        self.loc, self.log_scale = _location_and_log_scale(dim, loc, scale)

    def transform_noise(self, eps: Tensor) -> Tensor:
        return self._sample_with_log_det(eps)[0]

    def _sample_with_log_det(self, eps: Tensor) -> tuple[Tensor, Tensor]:
        """eps -> z and log |det dz/deps| through the flow's sampling direction, then the affine map."""
        y, ladj = self.flow().transform.inv.call_and_ladj(eps)
        return self.loc + y * self.log_scale.exp(), ladj + self.log_scale.sum()

    def rsample_and_log_prob(
        self, n: int, generator: torch.Generator | None = None, stop_gradient: bool = False
    ) -> tuple[Tensor, Tensor]:
        eps = self.noise(n, generator)
        if stop_gradient:
            z = self.transform_noise(eps)
            return z, detached_log_prob(self, z)
        z, log_det = self._sample_with_log_det(eps)
        return z, -0.5 * (eps.pow(2) + _LOG_2PI).sum(-1) - log_det

    def log_prob(self, z: Tensor) -> Tensor:
        y = (z - self.loc) * torch.exp(-self.log_scale)
        return self.flow().log_prob(y) - self.log_scale.sum()

    def marginal_log_scale(self) -> Tensor:
        """The final affine map's log scale: the flow's spread up to the spline layers' bounded stretch."""
        return self.log_scale

    def mean(self) -> Tensor:
        """Monte Carlo mean from 4096 draws (fixed seed, so repeated calls agree)."""
        with torch.no_grad():
            return self.rsample(4096, torch.Generator(self.loc.device).manual_seed(0)).mean(0)


class _fork_rng:
    """Initialise zuko's layers from `generator` (zuko draws from torch's global generator)."""

    def __init__(self, generator: torch.Generator | None) -> None:
        self.generator = generator
        self.forked = torch.random.fork_rng(devices=[]) if generator is not None else None

    def __enter__(self) -> None:
        if self.forked is not None:
            self.forked.__enter__()
            torch.manual_seed(int(torch.randint(0, 2**62, (), generator=self.generator)))

    def __exit__(self, *exc: object) -> None:
        if self.forked is not None:
            self.forked.__exit__(*exc)


FAMILIES: dict[str, type[Family]] = {"meanfield": MeanField, "fullrank": FullRank, "lowrank": LowRank, "flow": Flow}


def make_family(name: str, dim: int, **options: object) -> Family:
    """Build a family by name: 'meanfield', 'fullrank', 'lowrank' or 'flow'."""
    if name not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}, got {name!r}")
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    return FAMILIES[name](dim, **options)
