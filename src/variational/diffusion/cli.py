"""`variational diffusion train|eval|sample`: a thin shell over the typed config and the Python API."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from variational.errors import ConfigError

TRAIN_EXAMPLES = """examples:
  variational diffusion train                              # tiny DDPM on the embedded 8x8 digits (about a minute)
  variational diffusion train --dataset fashion-mnist --preset small --epochs 20 --out runs/ddpm-fmnist
  variational diffusion train --dataset mnist --binarize dynamic --out runs/ddpm-bin   # 2-level decoder: nats
  variational diffusion train --objective vlb --timesteps 4000 --schedule cosine
  variational diffusion train --config run.toml --lr 1e-4                             # flags override the file
  variational diffusion train --resume --out runs/ddpm-fmnist --epochs 40             # continue a run
"""

EVAL_EXAMPLES = """examples:
  variational diffusion eval runs/diffusion-digits8 --t-samples 10     # unbiased estimate, 10 t per image
  variational diffusion eval runs/diffusion-digits8 --full             # all T terms (T network calls per image)
  variational diffusion eval runs/ddpm-fmnist --t-samples 4 --limit 500 --json
  variational diffusion eval runs/ddpm-vlb --t-samples 10 --importance  # t from a vlb run's importance sampler
"""

SAMPLE_EXAMPLES = """examples:
  variational diffusion sample runs/diffusion-digits8 -n 64                          # ancestral, all T steps
  variational diffusion sample runs/diffusion-digits8 -n 16 --steps 50 --sampler ddim --out ddim.png
  variational diffusion sample runs/ddpm-fmnist -n 100 --steps 100 --npz samples.npz
"""

# flag -> type; None-valued flags are left to the config file / defaults.
OVERRIDES = {
    "dataset": str,
    "data_dir": str,
    "binarize": str,
    "levels": int,
    "preset": str,
    "channels": int,
    "timesteps": int,
    "schedule": str,
    "parameterization": str,
    "variance": str,
    "objective": str,
    "hybrid_lambda": float,
    "epochs": int,
    "batch_size": int,
    "lr": float,
    "ema": float,
    "seed": int,
    "device": str,
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "diffusion",
        help="diffusion models (DDPM): train, bound on -log p(x), sample",
        description="DDPMs as latent-variable models, trained and scored by their variational bound.",
    )
    sub = p.add_subparsers(dest="diffusion_command", metavar="SUBCOMMAND", required=True)
    _add_train(sub)
    _add_eval(sub)
    _add_sample(sub)


def _add_train(sub: argparse._SubParsersAction) -> None:
    from variational.diffusion.choices import (
        BINARIZE,
        OBJECTIVES,
        PARAMETERIZATIONS,
        PRESETS,
        SCHEDULES,
        VARIANCES,
    )

    p = sub.add_parser(
        "train",
        help="train a DDPM (writes a run directory)",
        epilog=TRAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a DDPM. Settings: defaults < --config file < flags.",
    )
    p.add_argument("--config", metavar="FILE", help="TOML or JSON file of config fields")
    p.add_argument(
        "--dataset", help="digits8 (default, embedded), digits, mnist, fashion-mnist, kmnist, or a .npz/.npy path"
    )
    p.add_argument("--data-dir", help="where to look for IDX datasets (then $VARIATIONAL_DATA, /usr/share/datasets)")
    p.add_argument("--binarize", choices=BINARIZE, help="binarise the images (the decoder then has 2 levels)")
    p.add_argument("--levels", type=int, help="levels of the discretised decoder (default 256, or 2 when binarised)")
    p.add_argument(
        "--preset", choices=PRESETS, help="U-Net size: tiny (8x8, tests), small (28x28 on a CPU), base (GPUs)"
    )
    p.add_argument("--channels", type=int, help="U-Net base width (overrides the preset)")
    p.add_argument("--timesteps", type=int, help="T, the number of diffusion steps (default 1000)")
    p.add_argument("--schedule", choices=SCHEDULES)
    p.add_argument("--parameterization", choices=PARAMETERIZATIONS, help="what the network predicts")
    p.add_argument(
        "--variance", choices=VARIANCES, help="reverse variance: beta-tilde (small), beta (large) or learned"
    )
    p.add_argument("--objective", choices=OBJECTIVES, help="simple (eps MSE), vlb (the bound), hybrid (default)")
    p.add_argument("--hybrid-lambda", type=float, help="weight of the bound in the hybrid objective (0.001)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--ema", type=float, metavar="DECAY", help="EMA decay of the weights (0 turns it off)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu, cuda, cuda:1")
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/diffusion-<dataset>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_train)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="the bound on -log p(x) of the test set (nats, bits/dim)",
        epilog=EVAL_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Evaluate a run's bound on -log p(x) on its test set, with the EMA weights.",
    )
    p.add_argument("run_dir", metavar="RUN", help="run directory (or its model.safetensors)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--full", action="store_true", help="sum all T terms (the default is --t-samples 10)")
    how.add_argument("--t-samples", type=_positive, metavar="S", help="unbiased estimate from S sampled t per image")
    p.add_argument(
        "--importance",
        action="store_true",
        help="draw t from the importance sampler a --objective vlb run learned (its checkpoint)",
    )
    p.add_argument("--limit", type=_positive, metavar="N", help="only the first N test images")
    p.add_argument("--batch-size", type=_positive, default=512, help="network rows per call (default 512)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of their EMA")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_eval)


def _add_sample(sub: argparse._SubParsersAction) -> None:
    from variational.diffusion.choices import SAMPLERS

    p = sub.add_parser(
        "sample",
        help="draw images from a trained model",
        epilog=SAMPLE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Draw images with the ancestral (ddpm) or DDIM sampler, with the EMA weights.",
    )
    p.add_argument("run_dir", metavar="RUN", help="run directory (or its model.safetensors)")
    p.add_argument("-n", type=_positive, default=64, help="number of images (default 64)")
    p.add_argument("--steps", type=_positive, help="sampling steps (default T)")
    p.add_argument("--sampler", choices=SAMPLERS, default="ddpm")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM's noise: 0 deterministic, 1 like ancestral")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of their EMA")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", metavar="PNG", help="image grid to write (default RUN/samples-<sampler>-<steps>.png)")
    p.add_argument("--npz", metavar="FILE", help="also save the images as an array 'images' (N, H, W) in [0, 1]")
    p.set_defaults(handler=_sample)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def config_from_args(args: argparse.Namespace):
    from variational.diffusion.config import DiffusionConfig, read_config_file

    values = read_config_file(args.config) if args.config else {}
    for name in OVERRIDES:
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value
    try:
        return DiffusionConfig.from_dict(values)
    except ConfigError as e:
        raise ConfigError(f"{args.config}: {e}" if args.config else str(e)) from None


def _train(args: argparse.Namespace) -> int:
    from variational.diffusion import resume, train
    from variational.diffusion.trainer import TrainingInterrupted

    out = Path(args.out) if args.out else None
    if args.resume:
        if out is None:
            raise ConfigError("--resume needs --out RUN_DIR, the run to continue")
        given = [
            f"--{n.replace('_', '-')}"
            for n in OVERRIDES
            if n not in ("epochs", "device") and getattr(args, n, None) is not None
        ]
        if given or args.config:
            raise ConfigError(
                "--resume continues a run as it was configured; only --epochs and --device may "
                f"change (got {', '.join(given + (['--config'] if args.config else []))})"
            )
    try:
        if args.resume:
            run = resume(out, epochs=args.epochs, device=args.device, progress=not args.no_progress)
        else:
            run = train(config_from_args(args), out, progress=not args.no_progress)
    except TrainingInterrupted as e:
        print(f"variational: {e}", file=sys.stderr)
        return 130
    last = run.metrics[-1] if run.metrics else None
    if last is not None:
        print(
            f"test bound after {last['epoch']} epochs: {last['test_bpd']:.4f} +- {last['test_bpd_stderr']:.4f} "
            f"bits/dim ({last['test_nats']:.2f} nats per image; {run.config.eval_t_samples} sampled t per image)"
        )
    print(
        f"run directory: {run.dir}  (samples.png, denoising.png, curves.png; "
        f"`variational diffusion eval {run.dir} --full` for the full bound)"
    )
    return 0


def _load(args: argparse.Namespace):
    from variational.diffusion import load

    return load(args.run_dir, device=args.device, ema=not args.no_ema)


def _eval(args: argparse.Namespace) -> int:
    import torch

    from variational.io import dumps_json
    from variational.training.data import load_images

    model = _load(args)
    c = model.config
    data = load_images(c.dataset, c.data_dir, c.binarize, c.seed, args.device)
    x = data.x_test[: args.limit] if args.limit else data.x_test
    s = None if args.full else (args.t_samples or 10)
    g = torch.Generator(device=args.device).manual_seed(args.seed)
    probs = _importance_probs(args, model) if args.importance else None
    result = model.nll(x, t_samples=s, batch_size=args.batch_size, generator=g, probs=probs)
    if args.json:
        print(
            dumps_json(
                {
                    "run_dir": str(args.run_dir),
                    "dataset": c.dataset,
                    "levels": c.data_levels,
                    "timesteps": c.timesteps,
                    "ema": not args.no_ema,
                    **result.to_dict(),
                }
            )
        )
    else:
        print(f"{c.dataset} test set, {c.data_levels}-level decoder, T = {c.timesteps}: {result}")
    return 0


def _importance_probs(args: argparse.Namespace, model):
    """p_t of the run's importance sampler (sqrt of each L_t's running second moment), from its checkpoint."""
    from variational.diffusion.objectives import ImportanceSampler
    from variational.diffusion.trainer import CHECKPOINT
    from variational.io import load_tensors

    if args.full:
        raise ConfigError("--importance applies to the sampled estimate (--t-samples), not to --full")
    path = Path(args.run_dir) / CHECKPOINT
    tensors = load_tensors(path) if path.is_file() else {}
    if "sampler.history" not in tensors:
        raise ConfigError(f"--importance needs a run trained with --objective vlb (no importance sampler in {path})")
    sampler = ImportanceSampler(model.timesteps)
    sampler.load({"history": tensors["sampler.history"], "count": tensors["sampler.count"]})
    if not sampler.warmed_up():
        raise ConfigError(f"{path}: the importance sampler has not seen every t 10 times yet; train longer")
    return sampler.probs()


def _sample(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from variational import plots

    if args.eta and args.sampler != "ddim":
        raise ConfigError("--eta applies to --sampler ddim only")
    if args.out is not None and not args.out.endswith(".png"):
        raise ConfigError(f"--out must name a .png file, got {args.out!r}")
    if args.npz is not None and not args.npz.endswith(".npz"):
        raise ConfigError(f"--npz must name a .npz file, got {args.npz!r}")
    model = _load(args)
    g = torch.Generator(device=args.device).manual_seed(args.seed)
    images = model.sample(args.n, steps=args.steps, sampler=args.sampler, eta=args.eta, generator=g).cpu().numpy()
    steps = args.steps or model.timesteps
    run_dir = Path(args.run_dir) if Path(args.run_dir).is_dir() else Path(args.run_dir).parent
    out = Path(args.out) if args.out else run_dir / f"samples-{args.sampler}-{steps}.png"
    plots.save_image_grid(out, images, ncols=min(8, args.n), title=f"samples ({args.sampler}, {steps} steps)")
    print(f"wrote {out}")
    if args.npz:
        np.savez_compressed(args.npz, images=images)
        print(f"wrote {args.npz}")
    return 0
