"""posteriordb posteriors with hand-written PyTorch log densities, and their reference draws.

A benchmark and test fixture, not part of the installed library: bench/vi_posteriordb.py imports it
from its own folder, and tests/vi/conftest.py puts bench/ on sys.path for tests/vi/test_posteriordb.py.

The folder (see its README.md) holds, per posterior, `data.json`, `info.json` (the log density in
math, the constraints and the unconstrained coordinate order) and, for seven of the ten,
`reference_draws.json.zip` (10 NUTS chains x 1,000 draws on the constrained scale). Each density
below is written from its info.json; its `Model` has the same unconstrained coordinates, in the
same order, as info.json's `unconstrained_param_order`.

Where the folder lives: the `root` argument, else `$VARIATIONAL_POSTERIORDB`, else
`shared/posteriordb` beside the repository.

Example (with bench/ on sys.path):
    >>> import posteriordb_models as posteriordb
    >>> entry = posteriordb.load("eight_schools-eight_schools_noncentered")
    >>> entry.model.dim, tuple(entry.reference_unconstrained().shape)
    (10, (10000, 10))
"""

from __future__ import annotations

import json
import math
import os
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Beta, Gamma, HalfCauchy, HalfNormal, Normal, StudentT, constraints

from variational.vi.constraints import ordered
from variational.vi.model import Model

__all__ = ["PosteriorDBEntry", "default_root", "linear_recurrence", "load", "names"]

Params = dict[str, Tensor]
LOG2 = math.log(2.0)


# ----------------------------------------------------------------------------------------------
# Shared pieces of the densities.
# ----------------------------------------------------------------------------------------------


def linear_recurrence(c: Tensor, b: Tensor) -> Tensor:
    """h_t = b h_{t-1} + c_t with h_0 = c_0, for all t at once: a doubling prefix scan over the last
    dim (Hillis and Steele 1986) in log2(T) vectorised steps instead of a loop over time."""
    h, power, shift, t = c, b, 1, c.shape[-1]
    while shift < t:
        h = torch.cat([h[..., :shift], h[..., shift:] + power * h[..., :-shift]], -1)
        power, shift = power * power, 2 * shift
    return h


@dataclass(frozen=True)
class _LeastSquares:
    """||y - X b||^2 = rss + ||R (b - b_hat)||^2 with X = QR and b_hat the least-squares solution
    (Golub and Van Loan, Matrix Computations, 5.3): an O(d^2) Gaussian likelihood per draw, exact."""

    r: Tensor
    b_hat: Tensor
    rss: Tensor
    n: int

    @classmethod
    def of(cls, X: Tensor, y: Tensor) -> _LeastSquares:
        q, r = torch.linalg.qr(X)
        b_hat = torch.linalg.solve_triangular(r, (q.T @ y)[:, None], upper=True)[:, 0]
        return cls(r, b_hat, ((y - X @ b_hat) ** 2).sum(), X.shape[0])

    def log_lik(self, b: Tensor, sigma: Tensor) -> Tensor:
        """sum_n log N(y_n | x_n^T b, sigma)."""
        sq = self.rss + (self.r @ (b - self.b_hat)).pow(2).sum()
        return -self.n * (sigma.log() + 0.5 * math.log(2 * math.pi)) - 0.5 * sq / sigma**2


def _fixed(cls: type, *params: float, dtype: torch.dtype):
    """A distribution with constant parameters, built once per model rather than per evaluation;
    argument checks off, since the spec's constraints keep every value in the support."""
    return cls(*(torch.tensor(float(v), dtype=dtype) for v in params), validate_args=False)


def _normal(loc: Tensor | float, scale: Tensor | float) -> Normal:
    """A Normal likelihood term without per-call argument checks (they cost more than the term)."""
    return Normal(loc, scale, validate_args=False)


def _vector(data: dict[str, Any], key: str, dtype: torch.dtype) -> Tensor:
    return torch.as_tensor(np.asarray(data[key], dtype=np.float64), dtype=dtype)


@dataclass(frozen=True)
class _Definition:
    """How to build one posterior: its Model and the maps between reference draws and its params."""

    build: Callable[[dict[str, Any], torch.dtype], tuple[Callable[[Params], Tensor], dict[str, Any]]]
    # reference draws {name: (n, *shape) tensor} -> the Model's params; identity when None
    to_params: Callable[[Params, dict[str, Any]], Params] | None = None
    from_params: Callable[[Params, dict[str, Any]], Params] | None = None


_REGISTRY: dict[str, _Definition] = {}


def _posterior(name: str, **maps: Callable):
    def register(build: Callable) -> Callable:
        _REGISTRY[name] = _Definition(build, **maps)
        return build

    return register


# ----------------------------------------------------------------------------------------------
# The ten posteriors, each from its info.json.
# ----------------------------------------------------------------------------------------------


@_posterior("arK-arK")
def _ark(data: dict[str, Any], dtype: torch.dtype):
    y, k = _vector(data, "y", dtype), int(data["K"])
    lags = torch.stack([y[k - j : len(y) - j] for j in range(1, k + 1)], 1)  # (T-K, K): y_{t-1}, ..., y_{t-K}
    target = y[k:]
    wide, half_cauchy = _fixed(Normal, 0, 10, dtype=dtype), _fixed(HalfCauchy, 2.5, dtype=dtype)

    def log_joint(p: Params) -> Tensor:
        prior = wide.log_prob(p["alpha"]) + wide.log_prob(p["beta"]).sum() + half_cauchy.log_prob(p["sigma"])
        return prior + _normal(p["alpha"] + lags @ p["beta"], p["sigma"]).log_prob(target).sum()

    return log_joint, {"alpha": constraints.real, "beta": (constraints.real, (k,)), "sigma": constraints.positive}


@_posterior("arma-arma11")
def _arma11(data: dict[str, Any], dtype: torch.dtype):
    y = _vector(data, "y", dtype)
    wide, narrow, half_cauchy = (
        _fixed(Normal, 0, 10, dtype=dtype),
        _fixed(Normal, 0, 2, dtype=dtype),
        _fixed(HalfCauchy, 2.5, dtype=dtype),
    )

    def log_joint(p: Params) -> Tensor:
        mu, phi, theta, sigma = p["mu"], p["phi"], p["theta"], p["sigma"]
        # err_t = (y_t - mu - phi y_{t-1}) - theta err_{t-1}, with y_0 := mu (nu_1 = mu + phi mu).
        prev = torch.cat([mu.reshape(1), y[:-1]])
        err = linear_recurrence(y - mu - phi * prev, -theta)
        prior = wide.log_prob(mu) + narrow.log_prob(phi) + narrow.log_prob(theta) + half_cauchy.log_prob(sigma)
        return prior + _normal(0.0, sigma).log_prob(err).sum()

    spec = {"mu": constraints.real, "phi": constraints.real, "theta": constraints.real, "sigma": constraints.positive}
    return log_joint, spec


@_posterior("diamonds-diamonds")
def _diamonds(data: dict[str, Any], dtype: torch.dtype):
    X = torch.as_tensor(np.asarray(data["X"], dtype=np.float64), dtype=dtype)[:, 1:]
    design = torch.cat([torch.ones(len(X), 1, dtype=dtype), X - X.mean(0)], 1)  # [1, Xc]
    ls = _LeastSquares.of(design, _vector(data, "Y", dtype))
    std, t_intercept = _fixed(Normal, 0, 1, dtype=dtype), _fixed(StudentT, 3, 8, 10, dtype=dtype)
    t_sigma = _fixed(StudentT, 3, 0, 10, dtype=dtype)  # folded at 0: twice the density, so + log 2

    def log_joint(p: Params) -> Tensor:
        prior = std.log_prob(p["b"]).sum() + t_intercept.log_prob(p["Intercept"]) + t_sigma.log_prob(p["sigma"]) + LOG2
        return prior + ls.log_lik(torch.cat([p["Intercept"].reshape(1), p["b"]]), p["sigma"])

    spec = {"b": (constraints.real, (X.shape[1],)), "Intercept": constraints.real, "sigma": constraints.positive}
    return log_joint, spec


@_posterior("earnings-logearn_interaction")
def _earnings(data: dict[str, Any], dtype: torch.dtype):
    height, male = _vector(data, "height", dtype), _vector(data, "male", dtype)
    design = torch.stack([torch.ones_like(height), height, male, height * male], 1)
    ls = _LeastSquares.of(design, _vector(data, "earn", dtype).log())

    def log_joint(p: Params) -> Tensor:  # flat priors
        return ls.log_lik(p["beta"], p["sigma"])

    return log_joint, {"beta": (constraints.real, (4,)), "sigma": constraints.positive}


def _schools_to_params(ref: Params, data: dict[str, Any]) -> Params:
    theta_trans = (ref["theta"] - ref["mu"][:, None]) / ref["tau"][:, None]
    return {"theta_trans": theta_trans, "mu": ref["mu"], "tau": ref["tau"]}


def _schools_from_params(p: Params, data: dict[str, Any]) -> Params:
    return {"theta": p["mu"][..., None] + p["tau"][..., None] * p["theta_trans"], "mu": p["mu"], "tau": p["tau"]}


@_posterior("eight_schools-eight_schools_noncentered", to_params=_schools_to_params, from_params=_schools_from_params)
def _eight_schools(data: dict[str, Any], dtype: torch.dtype):
    y, sigma = _vector(data, "y", dtype), _vector(data, "sigma", dtype)
    std, mu_prior = _fixed(Normal, 0, 1, dtype=dtype), _fixed(Normal, 0, 5, dtype=dtype)
    tau_prior = _fixed(HalfCauchy, 5, dtype=dtype)

    def log_joint(p: Params) -> Tensor:
        theta = p["mu"] + p["tau"] * p["theta_trans"]
        prior = std.log_prob(p["theta_trans"]).sum() + mu_prior.log_prob(p["mu"]) + tau_prior.log_prob(p["tau"])
        return prior + _normal(theta, sigma).log_prob(y).sum()

    spec = {"theta_trans": (constraints.real, (len(y),)), "mu": constraints.real, "tau": constraints.positive}
    return log_joint, spec


def _garch_to_params(ref: Params, data: dict[str, Any]) -> Params:
    rest = {k: v for k, v in ref.items() if k != "beta1"}
    return {**rest, "beta1_over_1m_alpha1": ref["beta1"] / (1 - ref["alpha1"])}


def _garch_from_params(p: Params, data: dict[str, Any]) -> Params:
    rest = {k: v for k, v in p.items() if k != "beta1_over_1m_alpha1"}
    return {**rest, "beta1": p["beta1_over_1m_alpha1"] * (1 - p["alpha1"])}


@_posterior("garch-garch11", to_params=_garch_to_params, from_params=_garch_from_params)
def _garch11(data: dict[str, Any], dtype: torch.dtype):
    y, sigma1 = _vector(data, "y", dtype), float(data["sigma1"])

    def log_joint(p: Params) -> Tensor:
        mu, alpha0, alpha1, r = p["mu"], p["alpha0"], p["alpha1"], p["beta1_over_1m_alpha1"]
        beta1 = r * (1 - alpha1)
        # sigma_t^2 = alpha0 + alpha1 (y_{t-1} - mu)^2 + beta1 sigma_{t-1}^2, sigma_1 = sigma1 (data).
        shocks = alpha0 + alpha1 * (y[:-1] - mu) ** 2
        var = linear_recurrence(torch.cat([shocks.new_full((1,), sigma1**2), shocks]), beta1)
        # Flat priors; beta1 = r (1 - alpha1) on (0, 1 - alpha1) adds log(1 - alpha1) for r.
        return _normal(mu, var.sqrt()).log_prob(y).sum() + torch.log1p(-alpha1)

    spec = {
        "mu": constraints.real,
        "alpha0": constraints.positive,
        "alpha1": constraints.unit_interval,
        "beta1_over_1m_alpha1": constraints.unit_interval,
    }
    return log_joint, spec


def _gp_cholesky(x: Tensor, rho: Tensor, alpha: Tensor) -> Tensor:
    """Cholesky factor of alpha^2 exp(-(x_i - x_j)^2 / (2 rho^2)) + 1e-10 I, batched over the shape
    of rho and alpha, in float64 (the 1e-10 jitter is below float32 resolution)."""
    x64, rho64, alpha64 = x.double(), rho.double()[..., None, None], alpha.double()[..., None, None]
    k = alpha64**2 * torch.exp(-((x64[:, None] - x64[None, :]) ** 2) / (2 * rho64**2))
    return torch.linalg.cholesky(k + 1e-10 * torch.eye(len(x64), dtype=torch.float64))


def _gp_to_params(ref: Params, data: dict[str, Any]) -> Params:
    chol = _gp_cholesky(torch.as_tensor(data["x"]), ref["rho"], ref["alpha"])
    f_tilde = torch.linalg.solve_triangular(chol, ref["f"].double()[..., None], upper=False)[..., 0]
    return {"rho": ref["rho"], "alpha": ref["alpha"], "f_tilde": f_tilde.to(ref["f"].dtype)}


def _gp_from_params(p: Params, data: dict[str, Any]) -> Params:
    chol = _gp_cholesky(torch.as_tensor(data["x"]), p["rho"], p["alpha"])
    f = (chol @ p["f_tilde"].double()[..., None])[..., 0]
    return {"rho": p["rho"], "alpha": p["alpha"], "f": f.to(p["f_tilde"].dtype)}


@_posterior("gp_pois_regr-gp_pois_regr", to_params=_gp_to_params, from_params=_gp_from_params)
def _gp_pois_regr(data: dict[str, Any], dtype: torch.dtype):
    x, k = _vector(data, "x", dtype), _vector(data, "k", dtype)
    log_k_factorial = torch.lgamma(k + 1)
    rho_prior, alpha_prior = _fixed(Gamma, 25, 4, dtype=dtype), _fixed(HalfNormal, 2, dtype=dtype)
    std = _fixed(Normal, 0, 1, dtype=dtype)

    def log_joint(p: Params) -> Tensor:
        f = (_gp_cholesky(x, p["rho"], p["alpha"]) @ p["f_tilde"].double()).to(p["f_tilde"].dtype)
        prior = rho_prior.log_prob(p["rho"]) + alpha_prior.log_prob(p["alpha"]) + std.log_prob(p["f_tilde"]).sum()
        return prior + (k * f - f.exp() - log_k_factorial).sum()  # Poisson with log rate f

    spec = {"rho": constraints.positive, "alpha": constraints.positive, "f_tilde": (constraints.real, (len(x),))}
    return log_joint, spec


@_posterior("low_dim_gauss_mix-low_dim_gauss_mix")
def _low_dim_gauss_mix(data: dict[str, Any], dtype: torch.dtype):
    y = _vector(data, "y", dtype)
    sigma_prior, mu_prior, theta_prior = (
        _fixed(HalfNormal, 2, dtype=dtype),
        _fixed(Normal, 0, 2, dtype=dtype),
        _fixed(Beta, 5, 5, dtype=dtype),
    )

    def log_joint(p: Params) -> Tensor:
        mu, sigma, theta = p["mu"], p["sigma"], p["theta"]
        prior = sigma_prior.log_prob(sigma).sum() + mu_prior.log_prob(mu).sum() + theta_prior.log_prob(theta)
        # Both components at once: (2, N) log densities, then log-sum-exp over the components.
        weights = torch.stack([theta.log(), torch.log1p(-theta)])[:, None]
        parts = weights + _normal(mu[:, None], sigma[:, None]).log_prob(y)
        return prior + torch.logsumexp(parts, 0).sum()

    spec = {"mu": (ordered, (2,)), "sigma": (constraints.positive, (2,)), "theta": constraints.unit_interval}
    return log_joint, spec


@_posterior("nes2000-nes")
def _nes(data: dict[str, Any], dtype: torch.dtype):
    age = _vector(data, "age_discrete", dtype)
    cols = [
        torch.ones_like(age),
        _vector(data, "real_ideo", dtype),
        _vector(data, "race_adj", dtype),
        (age == 2).to(dtype),
        (age == 3).to(dtype),
        (age == 4).to(dtype),
        _vector(data, "educ1", dtype),
        _vector(data, "gender", dtype),
        _vector(data, "income", dtype),
    ]
    ls = _LeastSquares.of(torch.stack(cols, 1), _vector(data, "partyid7", dtype))

    def log_joint(p: Params) -> Tensor:  # flat priors
        return ls.log_lik(p["beta"], p["sigma"])

    return log_joint, {"beta": (constraints.real, (9,)), "sigma": constraints.positive}


@_posterior("sblrc-blr")
def _sblrc(data: dict[str, Any], dtype: torch.dtype):
    X = torch.as_tensor(np.asarray(data["X"], dtype=np.float64), dtype=dtype)
    ls = _LeastSquares.of(X, _vector(data, "y", dtype))
    beta_prior, sigma_prior = _fixed(Normal, 0, 10, dtype=dtype), _fixed(HalfNormal, 10, dtype=dtype)

    def log_joint(p: Params) -> Tensor:
        prior = beta_prior.log_prob(p["beta"]).sum() + sigma_prior.log_prob(p["sigma"])
        return prior + ls.log_lik(p["beta"], p["sigma"])

    return log_joint, {"beta": (constraints.real, (X.shape[1],)), "sigma": constraints.positive}


# ----------------------------------------------------------------------------------------------
# Finding the folder, loading an entry.
# ----------------------------------------------------------------------------------------------


def _candidates(root: str | os.PathLike | None) -> list[Path]:
    if root is not None:
        return [Path(root)]
    found = [Path(os.environ["VARIATIONAL_POSTERIORDB"])] if os.environ.get("VARIATIONAL_POSTERIORDB") else []
    repository = Path(__file__).resolve().parents[1]  # bench/posteriordb_models.py
    return [*found, repository.parent / "shared" / "posteriordb"]


def default_root(root: str | os.PathLike | None = None) -> Path:
    """The posteriordb folder: `root`, else $VARIATIONAL_POSTERIORDB, else shared/posteriordb beside the
    repository. Raises FileNotFoundError listing where it looked."""
    tried = _candidates(root)
    for path in tried:
        if path.is_dir():
            return path
    raise FileNotFoundError(
        "posteriordb folder not found; looked in "
        + ", ".join(str(p) for p in tried)
        + " (pass root= or set VARIATIONAL_POSTERIORDB)"
    )


def names(with_reference: bool = False, root: str | os.PathLike | None = None) -> list[str]:
    """The posteriors with a hand-written density; with_reference=True keeps those with reference draws."""
    if not with_reference:
        return sorted(_REGISTRY)
    base = default_root(root)
    return sorted(n for n in _REGISTRY if (base / n / "reference_draws.json.zip").is_file())


@dataclass
class PosteriorDBEntry:
    """One posterior: its `Model`, data, info.json and reference draws (None where there are none).

    `reference` maps posteriordb's element names ("theta[1]", "tau", ...) to arrays of the
    10,000 constrained draws (chains concatenated); `reference_chains` is the number of chains.
    """

    name: str
    model: Model
    info: dict[str, Any]
    data: dict[str, Any] = field(repr=False)
    reference: dict[str, np.ndarray] | None = field(default=None, repr=False)
    reference_chains: int = 0
    _definition: _Definition | None = field(default=None, repr=False)

    @property
    def unconstrained_names(self) -> list[str]:
        """info.json's names of the unconstrained coordinates, in the Model's z order."""
        return list(self.info["unconstrained_param_order"])

    def reference_params(self, dtype: torch.dtype = torch.float64) -> Params:
        """The reference draws as the Model's constrained params: {name: (n, *shape)}."""
        if self.reference is None:
            raise ValueError(f"{self.name} has no reference draws")
        grouped = _group_elements(self.reference, dtype)
        if self._definition is not None and self._definition.to_params is not None:
            grouped = self._definition.to_params(grouped, self.data)
        return {p.name: grouped[p.name].reshape(-1, *p.shape) for p in self.model.params}

    def reference_unconstrained(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """The reference draws on the unconstrained scale, shape (n, d), columns in z order."""
        params = self.reference_params(dtype)
        n = len(next(iter(params.values())))
        return torch.cat([p.transform.inv(params[p.name]).reshape(n, -1) for p in self.model.params], 1)

    def to_reference_scale(self, params: Params) -> Params:
        """The Model's params (e.g. from `Posterior.sample`) as posteriordb's quantities
        (e.g. eight schools' theta from theta_trans, mu, tau)."""
        if self._definition is not None and self._definition.from_params is not None:
            return self._definition.from_params(dict(params), self.data)
        return dict(params)


def _group_elements(reference: dict[str, np.ndarray], dtype: torch.dtype) -> Params:
    """{"beta[1]": a, "beta[2]": b, "sigma": s} -> {"beta": (n, 2), "sigma": (n,)}."""
    groups: dict[str, list[tuple[int, np.ndarray]]] = {}
    for key, draws in reference.items():
        m = re.fullmatch(r"(.+)\[(\d+)\]", key)
        name, index = (m.group(1), int(m.group(2))) if m else (key, 0)
        groups.setdefault(name, []).append((index, draws))
    out = {}
    for name, items in groups.items():
        cols = [torch.as_tensor(d, dtype=dtype) for _, d in sorted(items, key=lambda t: t[0])]
        out[name] = torch.stack(cols, 1) if len(items) > 1 or items[0][0] > 0 else cols[0]
    return out


def _read_reference(path: Path) -> tuple[dict[str, np.ndarray], int]:
    with zipfile.ZipFile(path) as z, z.open(z.namelist()[0]) as f:
        chains = json.load(f)
    keys = list(chains[0])
    return {k: np.concatenate([np.asarray(c[k], dtype=np.float64) for c in chains]) for k in keys}, len(chains)


def load(name: str, root: str | os.PathLike | None = None, dtype: torch.dtype = torch.float64) -> PosteriorDBEntry:
    """Load one posterior: its Model (data as `dtype` tensors), info.json and reference draws."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown posterior {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    folder = default_root(root) / name
    for needed in ("info.json", "data.json"):
        if not (folder / needed).is_file():
            raise FileNotFoundError(f"{folder / needed} not found")
    info = json.loads((folder / "info.json").read_text())
    data = json.loads((folder / "data.json").read_text())
    definition = _REGISTRY[name]
    log_joint, spec = definition.build(data, dtype)
    model = Model(log_joint, spec, name=name)
    ref_path = folder / "reference_draws.json.zip"
    reference, chains = _read_reference(ref_path) if ref_path.is_file() else (None, 0)
    return PosteriorDBEntry(name, model, info, data, reference, chains, definition)
