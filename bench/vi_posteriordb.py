"""Benchmark: our VI against NumPyro's and Pyro's AutoNormal SVI on the posteriordb posteriors.

For every posterior in ../shared/posteriordb with reference draws, fit
  ours-meanfield, ours-fullrank   `variational.vi.fit` with its defaults (method="auto")
  numpyro-AutoNormal              SVI, Trace_ELBO (1 draw), Adam(lr 0.01), 10,000 steps
  pyro-AutoNormal                 the same in Pyro
and print one table: wall time (NumPyro's includes its JIT compilation, which every fit pays;
ours and NumPyro's are the medians of --repeats runs, 3 by default, Pyro's one run; each NumPyro
fit runs in a fresh process that has done one small warm-up fit, so that what JAX can reuse from
earlier compilations is the same for every posterior, see `run_numpyro`),
gradient evaluations of the log density at single draws, and accuracy against the reference draws
on the unconstrained scale: max over coordinates of |mean error| / reference sd, and the range of
sd / reference sd; then the issue's target, posterior by posterior. Not a test: numbers vary with
the machine.

The same log density in each library: ours and Pyro's are the hand-written PyTorch densities of
`posteriordb_models` (beside this script) (Pyro through `pyro.factor` over improper-uniform sites with the same
constraints, so AutoNormal's unconstrained coordinates are ours); NumPyro's are written again in
jax.numpy below, with the same reductions (least-squares form of the regressions). Everything runs
in float64 on one CPU thread per library, so that timings compare engines, not thread pools, and
every method starts from z = 0 on the unconstrained scale (AutoNormal's init scale 0.1, as ours).

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/vi_posteriordb.py                  # all seven, all four methods
    .venv/bin/python bench/vi_posteriordb.py --skip pyro --posteriors eight_schools-eight_schools_noncentered
"""

from __future__ import annotations

import os

# One thread per library (XLA, BLAS under numpy and scipy), set before the pools start.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402

import numpy as np  # noqa: E402
import posteriordb_models as pdb  # noqa: E402 -- beside this script (bench/), a benchmark fixture
import torch  # noqa: E402

# Imported here, not on first use (variational.vi loads lazily): the import of SciPy's optimisers
# (0.4 s) is no part of a fit's time.
from variational.vi.fitting import fit  # noqa: E402

METHODS = ("ours-meanfield", "ours-fullrank", "numpyro-AutoNormal", "pyro-AutoNormal")


@dataclass
class Row:
    posterior: str
    method: str
    wall_s: float
    cpu_s: float  # process CPU time (all threads): steadier than wall time on a shared machine
    jit_s: float  # NumPyro: the part of wall_s spent compiling (a 1-step run's wall time); else 0
    grad_evals: int
    max_mean_err: float  # max_j |mean_j - ref mean_j| / ref sd_j, unconstrained scale
    sd_ratio_min: float
    sd_ratio_max: float
    wall_runs: list[float]  # each run's wall time; wall_s and cpu_s are the medians over the runs


def accuracy(mean: np.ndarray, sd: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    ref_mean, ref_sd = ref.mean(0), ref.std(0, ddof=1)
    ratio = sd / ref_sd
    return float(np.max(np.abs(mean - ref_mean) / ref_sd)), float(ratio.min()), float(ratio.max())


# ----------------------------------------------------------------------------------------------
# Ours
# ----------------------------------------------------------------------------------------------


def run_ours(entry: pdb.PosteriorDBEntry, family: str, seed: int) -> tuple[float, int, np.ndarray, np.ndarray]:
    start = time.perf_counter()
    post = fit(entry.model, family=family, seed=seed)
    wall = time.perf_counter() - start
    q = post.q.distribution
    return wall, post.info.grad_evals, q.mean.detach().numpy(), q.variance.detach().sqrt().numpy()


def start_values(entry: pdb.PosteriorDBEntry) -> dict[str, torch.Tensor]:
    """Every method starts from z = 0 on the unconstrained scale (our default start)."""
    return entry.model.constrain(torch.zeros(entry.model.dim, dtype=torch.float64))


# ----------------------------------------------------------------------------------------------
# Pyro: our torch densities as a factor over improper-uniform sites.
# ----------------------------------------------------------------------------------------------


def run_pyro(entry: pdb.PosteriorDBEntry, steps: int, lr: float, seed: int):
    import pyro
    import pyro.distributions as dist
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide import AutoNormal, init_to_value

    params = entry.model.params

    def model():
        values = {p.name: pyro.sample(p.name, dist.ImproperUniform(p.constraint, (), p.shape)) for p in params}
        pyro.factor("log_joint", entry.model.log_joint(values))

    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide = AutoNormal(model, init_loc_fn=init_to_value(values=start_values(entry)))
    svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), Trace_ELBO())
    start = time.perf_counter()
    for _ in range(steps):
        svi.step()
    wall = time.perf_counter() - start
    with torch.no_grad():
        loc = torch.cat([getattr(guide.locs, p.name).reshape(-1) for p in params])
        scale = torch.cat([getattr(guide.scales, p.name).reshape(-1) for p in params])
    return wall, steps, loc.double().numpy(), scale.double().numpy()


# ----------------------------------------------------------------------------------------------
# NumPyro: each density again, in jax.numpy, from info.json.
# ----------------------------------------------------------------------------------------------


def least_squares(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, int]:
    """||y - Xb||^2 = rss + ||R (b - b_hat)||^2 with X = QR (the same reduction as ours)."""
    q, r = np.linalg.qr(X)
    b_hat = np.linalg.solve(r, q.T @ y)
    return r, b_hat, float(np.sum((y - X @ b_hat) ** 2)), len(y)


def numpyro_density(name: str, data: dict):
    """(log_joint(params) in jax.numpy, {site: (numpyro constraint, shape)}) for one posterior."""
    import jax
    import jax.numpy as jnp
    import numpyro.distributions as d
    from numpyro.distributions import constraints as c

    def normal_ls(ls, b, sigma):  # sum_n log N(y_n | x_n^T b, sigma)
        r, b_hat, rss, n = ls
        return (
            -n * (jnp.log(sigma) + 0.5 * math.log(2 * math.pi))
            - 0.5 * (rss + jnp.sum((r @ (b - b_hat)) ** 2)) / sigma**2
        )

    if name == "arK-arK":
        y, k = np.asarray(data["y"]), int(data["K"])
        lags = np.stack([y[k - j : len(y) - j] for j in range(1, k + 1)], 1)

        def lj(p):
            prior = (
                d.Normal(0, 10).log_prob(p["alpha"])
                + d.Normal(0, 10).log_prob(p["beta"]).sum()
                + d.HalfCauchy(2.5).log_prob(p["sigma"])
            )
            return prior + d.Normal(p["alpha"] + lags @ p["beta"], p["sigma"]).log_prob(y[k:]).sum()

        return lj, {"alpha": (c.real, ()), "beta": (c.real, (k,)), "sigma": (c.positive, ())}
    if name == "diamonds-diamonds":
        X = np.asarray(data["X"], float)[:, 1:]
        ls = least_squares(np.column_stack([np.ones(len(X)), X - X.mean(0)]), np.asarray(data["Y"], float))

        def lj(p):
            prior = d.Normal(0, 1).log_prob(p["b"]).sum() + d.StudentT(3, 8, 10).log_prob(p["Intercept"])
            prior = prior + d.StudentT(3, 0, 10).log_prob(p["sigma"]) + math.log(2)
            return prior + normal_ls(ls, jnp.concatenate([p["Intercept"][None], p["b"]]), p["sigma"])

        return lj, {"b": (c.real, (X.shape[1],)), "Intercept": (c.real, ()), "sigma": (c.positive, ())}
    if name == "eight_schools-eight_schools_noncentered":
        y, s = np.asarray(data["y"], float), np.asarray(data["sigma"], float)

        def lj(p):
            theta = p["mu"] + p["tau"] * p["theta_trans"]
            prior = (
                d.Normal(0, 1).log_prob(p["theta_trans"]).sum()
                + d.Normal(0, 5).log_prob(p["mu"])
                + d.HalfCauchy(5).log_prob(p["tau"])
            )
            return prior + d.Normal(theta, s).log_prob(y).sum()

        return lj, {"theta_trans": (c.real, (8,)), "mu": (c.real, ()), "tau": (c.positive, ())}
    if name == "garch-garch11":
        y, sigma1 = np.asarray(data["y"], float), float(data["sigma1"])

        def lj(p):
            mu, a0, a1, r = p["mu"], p["alpha0"], p["alpha1"], p["beta1_over_1m_alpha1"]
            b1 = r * (1 - a1)

            def step(var, y_prev):
                nxt = a0 + a1 * (y_prev - mu) ** 2 + b1 * var
                return nxt, nxt

            _, rest = jax.lax.scan(step, jnp.asarray(sigma1**2), y[:-1])
            var = jnp.concatenate([jnp.asarray([sigma1**2]), rest])
            return d.Normal(mu, jnp.sqrt(var)).log_prob(y).sum() + jnp.log1p(-a1)

        return lj, {
            "mu": (c.real, ()),
            "alpha0": (c.positive, ()),
            "alpha1": (c.unit_interval, ()),
            "beta1_over_1m_alpha1": (c.unit_interval, ()),
        }
    if name == "gp_pois_regr-gp_pois_regr":
        x, k = np.asarray(data["x"], float), np.asarray(data["k"], float)
        from jax.scipy.special import gammaln

        def lj(p):
            K = p["alpha"] ** 2 * jnp.exp(-((x[:, None] - x[None, :]) ** 2) / (2 * p["rho"] ** 2)) + 1e-10 * jnp.eye(
                len(x)
            )
            f = jnp.linalg.cholesky(K) @ p["f_tilde"]
            prior = (
                d.Gamma(25, 4).log_prob(p["rho"])
                + d.HalfNormal(2).log_prob(p["alpha"])
                + d.Normal(0, 1).log_prob(p["f_tilde"]).sum()
            )
            return prior + jnp.sum(k * f - jnp.exp(f) - gammaln(k + 1))

        return lj, {"rho": (c.positive, ()), "alpha": (c.positive, ()), "f_tilde": (c.real, (len(x),))}
    if name == "low_dim_gauss_mix-low_dim_gauss_mix":
        y = np.asarray(data["y"], float)

        def lj(p):
            mu, sigma, theta = p["mu"], p["sigma"], p["theta"]
            prior = (
                d.HalfNormal(2).log_prob(sigma).sum() + d.Normal(0, 2).log_prob(mu).sum() + d.Beta(5, 5).log_prob(theta)
            )
            parts = jnp.stack(
                [
                    jnp.log(theta) + d.Normal(mu[0], sigma[0]).log_prob(y),
                    jnp.log1p(-theta) + d.Normal(mu[1], sigma[1]).log_prob(y),
                ]
            )
            return prior + jax.scipy.special.logsumexp(parts, 0).sum()

        return lj, {"mu": (c.ordered_vector, (2,)), "sigma": (c.positive, (2,)), "theta": (c.unit_interval, ())}
    if name == "sblrc-blr":
        X, y = np.asarray(data["X"], float), np.asarray(data["y"], float)
        ls = least_squares(X, y)

        def lj(p):
            prior = d.Normal(0, 10).log_prob(p["beta"]).sum() + d.HalfNormal(10).log_prob(p["sigma"])
            return prior + normal_ls(ls, p["beta"], p["sigma"])

        return lj, {"beta": (c.real, (X.shape[1],)), "sigma": (c.positive, ())}
    raise KeyError(f"no NumPyro density for {name}")


def numpyro_svi(log_joint, sites: dict, start_at: dict, steps: int, lr: float, seed: int):
    """AutoNormal SVI on log_joint over improper-uniform sites: (wall seconds, (loc, scale) per site)."""
    import jax
    import numpyro
    import numpyro.distributions as d
    from numpyro.infer import SVI, Trace_ELBO, init_to_value
    from numpyro.infer.autoguide import AutoNormal

    def model():
        values = {s: numpyro.sample(s, d.ImproperUniform(con, (), shape)) for s, (con, shape) in sites.items()}
        numpyro.factor("log_joint", log_joint(values))

    guide = AutoNormal(model, init_loc_fn=init_to_value(values=start_at))
    svi = SVI(model, guide, numpyro.optim.Adam(lr), Trace_ELBO())
    start = time.perf_counter()
    result = svi.run(jax.random.PRNGKey(seed), steps, progress_bar=False)
    jax.block_until_ready(result.params)
    wall = time.perf_counter() - start
    return wall, {s: (result.params[f"{s}_auto_loc"], result.params[f"{s}_auto_scale"]) for s in sites}


def run_numpyro_here(entry: pdb.PosteriorDBEntry, steps: int, lr: float, seed: int):
    log_joint, sites = numpyro_density(entry.name, entry.data)
    start_at = {k: np.asarray(v) for k, v in start_values(entry).items()}
    wall, fitted = numpyro_svi(log_joint, sites, start_at, steps, lr, seed)
    loc = np.concatenate([np.ravel(fitted[s][0]) for s in sites])
    scale = np.concatenate([np.ravel(fitted[s][1]) for s in sites])
    return wall, steps, loc.astype(float), scale.astype(float)


def warm_up_numpyro(lr: float, seed: int) -> None:
    """One small fit through the same SVI path (a Normal with unknown mean and scale, 1,000 steps)."""
    import jax.numpy as jnp
    import numpyro.distributions as d
    from numpyro.distributions import constraints as c

    y = jnp.array([0.3, -1.2, 0.8, 1.5])

    def log_joint(p):
        return (
            d.Normal(0.0, 1.0).log_prob(p["mu"])
            + d.HalfNormal(1.0).log_prob(p["sigma"])
            + d.Normal(p["mu"], p["sigma"]).log_prob(y).sum()
        )

    numpyro_svi(log_joint, {"mu": (c.real, ()), "sigma": (c.positive, ())}, {"mu": 0.0, "sigma": 1.0}, 1000, lr, seed)


def run_numpyro(entry: pdb.PosteriorDBEntry, steps: int, lr: float, seed: int, root: str | None = None):
    """NumPyro's fit in a fresh process that has already run one small fit (`warm_up_numpyro`).

    NumPyro's wall time is mostly compilation, and how much of it JAX can reuse depends on what the
    process compiled before: sblrc's fit took 1.8 s as the seventh posterior of one process, right
    after diamonds, whose likelihood has the same least-squares form, and 3.4 s here. A fresh process
    per fit makes each one independent of the order of the others, and the warm-up leaves JAX's
    start-up and NumPyro's first-use costs out, as for a user's second fit in a session.
    Returns (wall, steps, loc, scale), the fit's CPU seconds (all its threads) and the wall time of a
    1-step run of the same fit after it (compiling a model the second time takes about a third as long).
    """
    command = [
        sys.executable,
        __file__,
        "--numpyro-worker",
        entry.name,
        "--steps",
        str(steps),
        "--lr",
        str(lr),
        "--seed",
        str(seed),
    ] + (["--root", str(root)] if root else [])
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"NumPyro worker for {entry.name} failed:\n{done.stderr[-2000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return (out["wall"], out["steps"], np.asarray(out["loc"]), np.asarray(out["scale"])), out["cpu"], out["jit"]


def numpyro_worker(args: argparse.Namespace) -> None:
    """The child of `run_numpyro`: warm up, fit, time a 1-step fit, print one JSON line."""
    import jax

    jax.config.update("jax_enable_x64", True)  # float64 like ours (gp_pois_regr's 1e-10 jitter needs it)
    warnings.simplefilter("ignore")
    warm_up_numpyro(args.lr, args.seed)
    entry = pdb.load(args.numpyro_worker, root=args.root)
    cpu = time.process_time()
    wall, steps, loc, scale = run_numpyro_here(entry, args.steps, args.lr, args.seed)
    cpu = time.process_time() - cpu
    # svi.run compiles its whole loop on every call: a 1-step run measures that fixed cost.
    jit = run_numpyro_here(entry, 1, args.lr, args.seed)[0]
    print(
        json.dumps({"wall": wall, "cpu": cpu, "steps": steps, "loc": loc.tolist(), "scale": scale.tolist(), "jit": jit})
    )


# ----------------------------------------------------------------------------------------------


def run_one(name: str, method: str, args: argparse.Namespace) -> Row:
    """Fit `name` with `method` args.repeats times and keep the median times (Pyro, 30-60 s a run, and
    NumPyro with --numpyro-in-process, whose later runs would reuse the first's compilation, run once).

    Our fit takes 0.1-0.8 s, where this machine's speed moves by 10-20% over seconds: one run is one
    draw of that noise, so both ours and NumPyro's are timed several times and their medians compared.
    Every run starts cold: ours on a freshly built Model, after a garbage collection (no run pays for
    one left over from the run before); NumPyro's in a fresh process (`run_numpyro`).
    """
    once = method == "pyro-AutoNormal" or (method == "numpyro-AutoNormal" and args.numpyro_in_process)
    walls, cpus, jit = [], [], 0.0
    for _ in range(1 if once else args.repeats):
        entry = pdb.load(name, root=args.root)
        gc.collect()
        started, child_cpu = time.process_time(), None
        if method.startswith("ours-"):
            out = run_ours(entry, method.removeprefix("ours-"), args.seed)
        elif method == "numpyro-AutoNormal" and not args.numpyro_in_process:
            out, child_cpu, jit = run_numpyro(entry, args.steps, args.lr, args.seed, args.root)
        elif method == "numpyro-AutoNormal":
            out = run_numpyro_here(entry, args.steps, args.lr, args.seed)
        else:
            out = run_pyro(entry, args.steps, args.lr, args.seed)
        cpus.append(child_cpu if child_cpu is not None else time.process_time() - started)
        walls.append(out[0])
        if method == "numpyro-AutoNormal" and args.numpyro_in_process:
            jit = run_numpyro_here(entry, 1, args.lr, args.seed)[0]  # its compilation: svi.run compiles on every call
    _, grads, mean, sd = out  # the same seed every run: the same fit
    err, lo, hi = accuracy(mean, sd, entry.reference_unconstrained().numpy())
    return Row(name, method, statistics.median(walls), statistics.median(cpus), jit, grads, err, lo, hi, walls)


def table(rows: list[Row]) -> str:
    lines = [
        "| posterior | method | wall s (median) | runs: min - max | cpu s | of which JIT s | grad evals | "
        "max abs mean err / ref sd | sd / ref sd |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        jit = f"{r.jit_s:.2f}" if r.jit_s else ""
        spread = f"{min(r.wall_runs):.2f} - {max(r.wall_runs):.2f}" if len(r.wall_runs) > 1 else "1 run"
        lines.append(
            f"| {r.posterior} | {r.method} | {r.wall_s:.2f} | {spread} | {r.cpu_s:.2f} | {jit} | {r.grad_evals:,} | "
            f"{r.max_mean_err:.3f} | {r.sd_ratio_min:.2f} - {r.sd_ratio_max:.2f} |"
        )
    return "\n".join(lines)


def target_table(rows: list[Row]) -> str:
    """The issue's target per posterior: ours-meanfield as accurate as NumPyro's mean-field fit or
    better, in at most a tenth of its wall time (medians; the last column pairs our slowest run with
    NumPyro's fastest)."""
    by = {(r.posterior, r.method): r for r in rows}
    lines = [
        "| posterior | max mean err: ours / NumPyro | wall: ours / NumPyro (medians) | slowest ours / fastest NumPyro | met |",
        "|---|---|---:|---:|---|",
    ]
    for name in dict.fromkeys(r.posterior for r in rows):
        ours, theirs = by.get((name, "ours-meanfield")), by.get((name, "numpyro-AutoNormal"))
        if ours is None or theirs is None:
            continue
        ratio, worst = ours.wall_s / theirs.wall_s, max(ours.wall_runs) / min(theirs.wall_runs)
        met = ours.max_mean_err <= theirs.max_mean_err and ratio <= 0.1
        lines.append(
            f"| {name} | {ours.max_mean_err:.3f} / {theirs.max_mean_err:.3f} | {ratio:.1%} | {worst:.1%} | "
            f"{'yes' if met else 'no'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posteriors", nargs="*", default=None, help="default: all with reference draws")
    parser.add_argument("--skip", nargs="*", default=[], choices=["ours", "numpyro", "pyro"])
    parser.add_argument("--steps", type=int, default=10_000, help="Adam steps for NumPyro and Pyro")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", default=None, help="posteriordb folder (default: see bench/posteriordb_models.py)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument(
        "--numpyro-in-process",
        action="store_true",
        help="run NumPyro in this process, in posterior order (its compilation cache then carries over "
        "from one posterior to the next), instead of one fresh process per fit",
    )
    parser.add_argument("--numpyro-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of ours and NumPyro per posterior (median kept; Pyro runs once)"
    )
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)  # Pyro's AutoNormal parameters in float64, like ours
    if args.numpyro_worker:
        numpyro_worker(args)
        return
    if args.numpyro_in_process and "numpyro" not in args.skip:
        import jax

        jax.config.update("jax_enable_x64", True)
        jax.block_until_ready(jax.jit(lambda x: x + 1)(1.0))  # start JAX's backend before any timing
    warnings.simplefilter("ignore")  # k-hat warnings and library deprecations would drown the table
    methods = [m for m in METHODS if m.split("-")[0] not in args.skip]
    names = args.posteriors or pdb.names(with_reference=True, root=args.root)
    rows = []
    for name in names:
        for method in methods:
            rows.append(run_one(name, method, args))
            r = rows[-1]
            runs = " ".join(f"{w:.2f}" for w in r.wall_runs)
            print(
                f"{r.posterior:40s} {r.method:20s} {r.wall_s:8.2f}s ({runs}) cpu {r.cpu_s:7.2f}s (jit {r.jit_s:5.2f}s) "
                f"{r.grad_evals:8d} {r.max_mean_err:7.3f} {r.sd_ratio_min:5.2f}-{r.sd_ratio_max:5.2f}",
                flush=True,
            )
    print()
    print(table(rows))
    print()
    print(target_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in rows], f, indent=1)


if __name__ == "__main__":
    main()
