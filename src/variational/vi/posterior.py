"""The result of `vi.fit`: the fitted q pushed through the model's constraints, with diagnostics.

    >>> post = vi.fit(model)                          # doctest: +SKIP
    >>> post.sample(1000)["tau"].shape                # doctest: +SKIP
    torch.Size([1000])
    >>> print(post.summary())                         # doctest: +SKIP
    >>> post.elbo, post.khat, post.log_evidence(1000) # doctest: +SKIP

Draws are reproducible: without a generator, `sample(n)` seeds one from the fit's seed.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import Tensor

from variational.core.diagnostics import KHAT_WARN, importance_ess, psis
from variational.core.families import Family
from variational.core.objectives import log_mean_exp
from variational.errors import ConfigError
from variational.vi.model import Model

__all__ = ["FitInfo", "Posterior"]

_CHUNK = 256  # draws per batched log-density evaluation


@dataclass
class FitInfo:
    """How the fit went: what ran, whether it converged, and what it cost."""

    family: str
    method: str
    converged: bool
    message: str
    iterations: int  # optimiser iterations (deterministic) or Adam steps (stochastic)
    objective_evals: int  # evaluations of the (Monte Carlo) objective and its gradient
    grad_evals: int  # gradients of the log density at single draws (objective_evals x draws)
    time_s: float
    draws: int  # draws per objective evaluation
    trace: list[float] = field(default_factory=list, repr=False)  # objective per iteration/step
    # Deterministic fits (mean field, full rank): the estimated Monte Carlo standard error of q's
    # means, largest over the coordinates, in units of q's sd (None where not estimated); the fresh
    # draws of the Newton steps that tried to reduce it (0: none tried); and whether a step was
    # refused (then q is the fixed-draw optimum and mc_error the refused step's length).
    mc_error: float | None = None
    correction_draws: int = 0
    correction_refused: bool = False
    # Set when q's scale or location kept running off through the fit (`variational.vi.runaway`):
    # one line naming the parameter; the posterior looks improper and the fit is not converged.
    improper: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("trace")
        return d


class Posterior:
    """A fitted q over the model's unconstrained space, viewed on the constrained scale."""

    def __init__(self, model: Model, q: Family, info: FitInfo, seed: int = 0, n_eval: int = 2000) -> None:
        # q is fitted: freeze it, so its moments and draws carry no autograd graph.
        self.model, self.q, self.info, self.seed, self.n_eval = (
            model,
            q.eval().requires_grad_(False),
            info,
            seed,
            n_eval,
        )

    def _generator(self, generator: torch.Generator | None, offset: int = 0) -> torch.Generator:
        return generator if generator is not None else torch.Generator().manual_seed(self.seed + 7919 * (offset + 1))

    @torch.no_grad()
    def sample_unconstrained(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws z ~ q on the unconstrained scale, shape (n, d)."""
        return self.q.rsample(n, self._generator(generator))

    def sample(self, n: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """n draws on the constrained scale: {name: tensor of shape (n, *shape)}."""
        with torch.no_grad():
            return self.model.constrain(self.sample_unconstrained(n, generator))

    @torch.no_grad()
    def log_weights(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """log p(x, z_s) - log q(z_s) for n draws z_s ~ q (on the unconstrained scale, Jacobian included)."""
        z, log_q = self.q.rsample_and_log_prob(n, generator)
        # Chunks bound the memory of vmap over draws x data rows.
        log_p = torch.cat([self.model.log_density(chunk) for chunk in z.split(_CHUNK)])
        return log_p - log_q

    @cached_property
    def _eval_weights(self) -> np.ndarray:
        return self.log_weights(self.n_eval, self._generator(None, offset=1)).double().numpy()

    @property
    def elbo(self) -> float:
        """ELBO estimated from `n_eval` fresh draws (not the draws the optimiser saw).

        -inf when some draws have log density -inf (q puts mass where the model has none); NaN or +inf
        when the log density is NaN or +inf at some draw (see `non_finite_share`).
        """
        with np.errstate(invalid="ignore"):
            return float(np.mean(self._eval_weights))

    @property
    def elbo_se(self) -> float:
        """Monte Carlo standard error of `elbo` (NaN when some log weight is not finite)."""
        lw = self._eval_weights
        return float(np.std(lw, ddof=1) / math.sqrt(lw.size)) if np.all(np.isfinite(lw)) else math.nan

    @property
    def non_finite_share(self) -> float:
        """Share of the `n_eval` draws from q at which log p(x, z) - log q(z) is not finite."""
        return float(np.mean(~np.isfinite(self._eval_weights)))

    @cached_property
    def _psis(self) -> tuple[np.ndarray, float]:
        lw = self._eval_weights
        if np.any(np.isnan(lw) | (lw == np.inf)):
            return lw, math.inf  # NaN or unbounded weights: no tail to fit, and q is not to be trusted
        return psis(lw)  # -inf is a zero weight: q reaches where p has no mass

    @property
    def khat(self) -> float:
        """PSIS Pareto k-hat of p/q (Yao et al. 2018); warns above 0.7, where q is not to be trusted.

        Infinite when some log density is NaN or +inf; a finite k-hat with a non-finite ELBO also warns.
        """
        k = self._psis[1]
        if self.info.improper:
            warnings.warn(
                f"{self.info.improper}; do not trust q's summaries, whatever k-hat says", RuntimeWarning, stacklevel=2
            )
        if k > KHAT_WARN:
            warnings.warn(
                f"k-hat = {k:.2f} > {KHAT_WARN}: q is a poor fit to the posterior; do not trust its "
                "summaries (try family='fullrank' or 'flow', or a reparameterised model)"
                + (f"; {self.non_finite_note()}" if self.non_finite_share else ""),
                RuntimeWarning,
                stacklevel=2,
            )
        elif self.non_finite_share:
            warnings.warn(f"{self.non_finite_note()}; do not trust q's summaries", RuntimeWarning, stacklevel=2)
        return k

    @property
    def trustworthy(self) -> bool:
        """k-hat at most 0.7, a finite ELBO and no sign of an improper posterior: q's summaries can be used."""
        return bool(self._psis[1] <= KHAT_WARN and math.isfinite(self.elbo) and self.info.improper is None)

    def non_finite_note(self) -> str:
        """One line on the draws with a non-finite log density, or '' when there are none."""
        lw, share = self._eval_weights, self.non_finite_share
        if not share:
            return ""
        kinds = "/".join(
            k
            for k, hit in (
                ("-inf", np.any(lw == -np.inf)),
                ("+inf", np.any(lw == np.inf)),
                ("NaN", np.any(np.isnan(lw))),
            )
            if hit
        )
        return (
            f"the log density is {kinds} at {100 * share:.1f}% of {lw.size} draws from q: the model is "
            "undefined where q reaches; give each parameter a constraint matching its support"
        )

    @property
    def ess(self) -> float:
        """Importance-sampling effective sample size of the PSIS-smoothed weights, out of `n_eval` (NaN when
        some log density is NaN or +inf)."""
        smoothed, k = self._psis
        return importance_ess(smoothed) if math.isfinite(k) else math.nan

    def log_evidence(self, k: int = 1000, generator: torch.Generator | None = None) -> float:
        """Importance-weighted estimate log (1/k) sum_i p(x, z_i) / q(z_i) of log p(x) (Burda et al. 2016).

        Its expectation is a lower bound on log p(x) that tightens as k grows.
        """
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        return float(log_mean_exp(self.log_weights(k, self._generator(generator, offset=2)).double(), 0))

    def summary(self, n: int = 4000, quantiles: tuple[float, ...] = (0.05, 0.5, 0.95)):
        """A pandas DataFrame: one row per constrained scalar, columns mean, sd and the quantiles."""
        import pandas as pd

        draws = self.sample(n)
        flat = torch.cat([draws[p.name].reshape(n, -1) for p in self.model.params], dim=1).double()
        table = {"mean": flat.mean(0), "sd": flat.std(0)}
        qs = torch.quantile(flat, torch.tensor(quantiles, dtype=flat.dtype), dim=0)
        table.update({f"{100 * q:g}%": qs[i] for i, q in enumerate(quantiles)})
        return pd.DataFrame({k: v.numpy() for k, v in table.items()}, index=self.model.element_names())

    def to_arviz(self, n: int = 1000):
        """An ArviZ InferenceData with n draws in one chain, and the fit's diagnostics as attributes."""
        import arviz as az

        draws = {k: v.double().numpy()[None] for k, v in self.sample(n).items()}
        attrs = {"elbo": self.elbo, "khat": self._psis[1], "family": self.info.family, "method": self.info.method}
        return az.from_dict(posterior=draws, attrs=attrs)

    def to_dict(self, n: int = 4000) -> dict[str, Any]:
        """JSON-ready record: summary rows, ELBO, k-hat and the fit information."""
        table = self.summary(n)
        return {
            "model": self.model.name,
            "summary": {name: {c: float(v) for c, v in row.items()} for name, row in table.iterrows()},
            "elbo": self.elbo,
            "elbo_se": self.elbo_se,
            "khat": self._psis[1],
            "khat_ok": self.trustworthy,
            "non_finite_share": self.non_finite_share,
            "ess": self.ess,
            "fit": self.info.to_dict(),
        }

    def __repr__(self) -> str:
        return f"Posterior({self.model.name!r}, family={self.info.family!r}, method={self.info.method!r}, elbo={self.elbo:.3f})"
