"""Regenerate every picture the docs show, from the library's own API.

    PYTHONPATH=src python docs/make_pictures.py            # writes docs/img/*.png
    PYTHONPATH=src python docs/make_pictures.py --out /tmp/img --only vi calculus

Each picture is made the way a user makes it: a VAE trained briefly (seeded) on the embedded digits,
a posteriordb posterior fitted with `variational.vi` and drawn against its NUTS reference draws, and
a classic problem of the calculus of variations solved and drawn beside its exact extremal. Nothing is
downloaded; the posteriordb densities are the benchmark's own (bench/posteriordb_models.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from variational import calculus, vae, vi
from variational.calculus.plot import plot_extremal
from variational.vae import pictures
from variational.vi.plot import save_marginals

IMG = Path(__file__).resolve().parent / "img"
# The posteriordb densities are a benchmark fixture, not part of the installed library.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import posteriordb_models as posteriordb  # noqa: E402

VAE_EPOCHS = 20  # brief: the reference preset on 1,500 digits, enough for blurry but legible digits
POSTERIOR = "eight_schools-eight_schools_noncentered"


def vae_pictures(out: Path) -> list[Path]:
    """Prior samples and test-set reconstructions of the reference VAE (the `reference` preset)."""
    config = vae.VAEConfig(preset="reference", dataset="digits", epochs=VAE_EPOCHS, seed=0)
    with tempfile.TemporaryDirectory() as run_dir:  # the run's checkpoints are not part of the docs
        run = vae.train(config, out=run_dir, progress=False, log=lambda msg: None)
    run.model.eval()
    return [
        pictures.save_samples(run.model, out / "vae_samples.png", n=32),
        pictures.save_reconstructions(run.model, run.data.x_test, out / "vae_reconstructions.png", n=16),
    ]


def vi_pictures(out: Path) -> list[Path]:
    """Full-rank Gaussian VI on non-centred eight schools, its marginals over the NUTS reference draws."""
    entry = posteriordb.load(POSTERIOR)
    post = vi.fit(entry.model, family="fullrank", seed=0)
    return [save_marginals(post, out / "vi_marginals.png", reference=entry.reference_params())]


def calculus_pictures(out: Path) -> list[Path]:
    """The brachistochrone: the numeric extremal, the exact cycloid and the straight line."""
    problem = calculus.get_problem("brachistochrone")
    return [plot_extremal(calculus.solve(problem), problem, out / "calculus_brachistochrone.png")]


PICTURES = {"vae": vae_pictures, "vi": vi_pictures, "calculus": calculus_pictures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=IMG, help=f"folder for the PNGs (default {IMG})")
    parser.add_argument(
        "--only", nargs="+", choices=list(PICTURES), default=list(PICTURES), help="make only these front ends' pictures"
    )
    args = parser.parse_args(argv)
    for name in args.only:
        start = time.perf_counter()
        for path in PICTURES[name](args.out):
            print(f"wrote {path} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
