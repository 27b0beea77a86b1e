"""`variational vae train|eval|sample|reconstruct|latent`: a thin shell over the typed config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from variational.errors import ConfigError
from variational.io import dumps_json
from variational.vae.config import ARCHS, BINARIZE, LIKELIHOODS

TRAIN_EXAMPLES = """examples:
  variational vae train                                   # reference model on the embedded digits
  variational vae train --dataset fashion-mnist --epochs 20 --out runs/fmnist
  variational vae train --preset conv --dataset mnist --data-dir ~/data --binarize dynamic
  variational vae train --config run.toml --lr 3e-4       # flags override the file
  variational vae train --latent-dim 2 --iw-k 5 --out runs/iwae2d
  variational vae train --resume --out runs/fmnist --epochs 40   # continue an interrupted run
  torchrun --nproc-per-node 4 -m variational vae train --device cuda --dataset mnist   # 4 GPUs (DDP)
"""

# flag -> (config field, type); None-valued flags are left to the config file / preset / defaults.
OVERRIDES = {
    "dataset": str,
    "data_dir": str,
    "preset": str,
    "arch": str,
    "hidden": str,
    "latent_dim": int,
    "likelihood": str,
    "sigma": float,
    "binarize": str,
    "val_fraction": float,
    "epochs": int,
    "batch_size": int,
    "lr": float,
    "beta": float,
    "kl_warmup_epochs": int,
    "iw_k": int,
    "seed": int,
    "device": str,
}


def register(subparsers: argparse._SubParsersAction) -> None:
    vae = subparsers.add_parser(
        "vae",
        help="variational autoencoders: train, evaluate, sample",
        description="Train, evaluate and sample variational autoencoders.",
    )
    sub = vae.add_subparsers(dest="vae_command", metavar="SUBCOMMAND", required=True)
    _add_train(sub)
    _add_eval(sub)
    _add_sample(sub)
    _add_reconstruct(sub)
    _add_latent(sub)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a VAE (writes a run directory)",
        epilog=TRAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a VAE. Settings: defaults < --preset < --config file < flags.",
    )
    p.add_argument("--config", metavar="FILE", help="TOML or JSON file of config fields")
    p.add_argument(
        "--dataset", help="digits (default, embedded), digits8, mnist, fashion-mnist, kmnist, or a .npz/.npy path"
    )
    p.add_argument("--data-dir", help="where to look for IDX datasets (then $VARIATIONAL_DATA, /usr/share/datasets)")
    p.add_argument("--preset", help="reference (the texts' 784-400-20 MLP; `seed` is an alias) or conv")
    p.add_argument("--arch", choices=ARCHS)
    p.add_argument("--hidden", metavar="SIZES", help="comma-separated hidden sizes (mlp) or two channel counts (conv)")
    p.add_argument("--latent-dim", type=int)
    p.add_argument("--likelihood", choices=LIKELIHOODS)
    p.add_argument("--sigma", type=float, help="decoder sd of the fixed-variance gaussian likelihood")
    p.add_argument("--binarize", choices=BINARIZE)
    p.add_argument("--val-fraction", type=float, help="hold out this share of the training set for validation")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--beta", type=float, help="KL weight (beta-VAE); 1 is the ELBO")
    p.add_argument("--kl-warmup-epochs", type=int, help="KL warm-up: beta * epoch / N over the first N epochs")
    p.add_argument("--iw-k", type=int, help="K > 1 trains on the importance-weighted bound (IWAE)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps")
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/<dataset>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument(
        "--eval-iw",
        type=_count(0),
        default=0,
        metavar="K",
        help="after training, also estimate log p(x) with K importance samples",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_dist_timeout(p)
    p.set_defaults(handler=_train)


def _add_dist_timeout(p: argparse.ArgumentParser) -> None:
    from variational.vae.config import DIST_TIMEOUT_S as DEFAULT_TIMEOUT_S

    p.add_argument(
        "--dist-timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help="under torchrun: how long a rank waits for the others before the job stops "
        f"with an error (default {DEFAULT_TIMEOUT_S:g})",
    )


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="test ELBO and importance-weighted log p(x) of a run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  variational vae eval runs/digits\n"
        "  variational vae eval runs/fmnist --iw-samples 5000 --json",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument(
        "--iw-samples", type=_count(0), default=5000, metavar="K", help="importance samples per image (0: ELBO only)"
    )
    p.add_argument("--limit", type=_count(1), metavar="N", help="evaluate the first N test images only")
    p.add_argument("--seed", type=int, default=None, help="noise seed (default: the run's seed)")
    p.add_argument("--device", default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_dist_timeout(p)
    p.set_defaults(handler=_eval)


def _picture_command(
    sub: argparse._SubParsersAction, name: str, help: str, example: str, png: str, handler
) -> argparse.ArgumentParser:
    """A sub-command that reads a run and writes one PNG (RUN_DIR/<png> unless --out says)."""
    p = sub.add_parser(
        name, help=help, epilog=f"example:\n  {example}", formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", default=None, help=f"PNG path (default RUN_DIR/{png})")
    p.set_defaults(handler=handler)
    return p


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = _picture_command(
        sub,
        "sample",
        "decode draws from the prior into an image grid",
        "variational vae sample runs/digits -n 100 --out samples.png",
        "samples.png",
        _sample,
    )
    p.add_argument("-n", type=_count(1), default=64, help="number of samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--npy", default=None, help="also save the images as a .npy array")


def _add_reconstruct(sub: argparse._SubParsersAction) -> None:
    p = _picture_command(
        sub,
        "reconstruct",
        "test images over their reconstructions",
        "variational vae reconstruct runs/digits -n 32",
        "reconstructions.png",
        _reconstruct,
    )
    p.add_argument("-n", type=_count(1), default=16, help="number of test images")


def _add_latent(sub: argparse._SubParsersAction) -> None:
    p = _picture_command(
        sub,
        "latent",
        "the latent map: 2-D manifold, or a projection coloured by label",
        "variational vae latent runs/digits --out latent.png",
        "latent.png",
        _latent,
    )
    p.add_argument("--interpolation", default=None, metavar="PNG", help="also write a latent interpolation")


def config_from_args(args: argparse.Namespace):
    """defaults < preset < config file < flags."""
    from variational.vae.config import VAEConfig, read_config_file

    values = read_config_file(args.config) if args.config else {}
    for name in OVERRIDES:
        value = getattr(args, name, None)
        if value is not None:
            values[name] = _sizes(value) if name == "hidden" else value
    return VAEConfig.from_dict(values)


def _sizes(text: str) -> list[int]:
    """'512,256' -> [512, 256]; '' -> [] (linear encoder and decoder); an empty item is an error."""
    if not text.strip():
        return []
    try:
        return [int(h) for h in text.split(",")]  # int() refuses '' and '4x' alike
    except ValueError:
        raise ConfigError(
            f"--hidden takes comma-separated integers such as 512,256 (or '' for none); got {text!r}"
        ) from None


def _train(args: argparse.Namespace) -> int:
    from variational.vae import distributed

    out = Path(args.out) if args.out else None
    if args.resume and out is None:
        raise ConfigError("--resume needs --out RUN_DIR, the run to continue")
    if args.resume:
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
    config = None if args.resume else config_from_args(args)
    device = args.device or (_saved_device(out) if args.resume else config.device)
    with distributed.session(device, args.dist_timeout) as group:
        try:
            return _train_in(args, config, out, group)
        except distributed.RankFailure as e:
            print(f"variational: error: {e}", file=sys.stderr)
            return 1


def _train_in(args: argparse.Namespace, config, out: Path | None, group) -> int:
    """Train and evaluate; under torchrun every rank runs this and rank 0 alone prints and writes."""
    from variational.vae import evaluate, resume, train
    from variational.vae.trainer import TrainingDiverged, TrainingInterrupted

    main = group is None or group.is_main
    progress = not args.no_progress and main
    try:
        if args.resume:
            run = resume(out, epochs=args.epochs, device=args.device, progress=progress)
        else:
            run = train(config, out, progress=progress)
    except TrainingInterrupted as e:
        if main:
            print(f"variational: {e}", file=sys.stderr)
        return 130
    except TrainingDiverged as e:
        if main:
            print(f"variational: error: {e}", file=sys.stderr)
        return 3
    result = evaluate(run.model, run.data.x_test, iw_samples=args.eval_iw, seed=run.config.seed, progress=progress)
    if main:
        _write_json(run.dir / "evaluation.json", result.to_dict())
        print(_format_eval(result, run.config.dataset))
        drawn = ", ".join(p.name for p in run.pictures)
        print(f"run directory: {run.dir}" + (f"  ({drawn})" if drawn else ""))
    return 0


def _saved_device(out: Path) -> str:
    """The device a run was trained on, read from its checkpoint (cpu when there is none yet)."""
    from variational.vae import persist
    from variational.vae.trainer import CHECKPOINT

    path = out / CHECKPOINT
    return persist.stored_device(path) if path.is_file() else "cpu"


def _eval(args: argparse.Namespace) -> int:
    from variational.vae import distributed, evaluate

    device = args.device or "cpu"
    with distributed.session(device, args.dist_timeout) as group:
        main = group is None or group.is_main
        model, data = _model_and_test(args.run_dir, device)
        x = data.x_test[: args.limit] if args.limit else data.x_test
        seed = model.config.seed if args.seed is None else args.seed
        try:  # under torchrun the images are sharded over the ranks; rank 0 prints
            result = evaluate(model, x, iw_samples=args.iw_samples, seed=seed, progress=main and not args.json)
        except distributed.RankFailure as e:
            print(f"variational: error: {e}", file=sys.stderr)
            return 1
    if not main:
        return 0
    if args.json:
        print(dumps_json({"run_dir": str(args.run_dir), "dataset": model.config.dataset, **result.to_dict()}))
    else:
        print(_format_eval(result, model.config.dataset))
    return 0


def _sample(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from variational.plots import save_image_grid
    from variational.vae import load

    png = Path(args.out or Path(args.run_dir) / "samples.png")
    outputs = [("--out", png)] + ([("--npy", Path(args.npy))] if args.npy else [])
    _check_outputs(outputs)  # every output path before anything is written
    model = load(args.run_dir)
    images = model.sample(args.n, generator=torch.Generator().manual_seed(args.seed)).numpy()
    path = save_image_grid(png, images, title=f"{args.n} samples from the prior")
    if args.npy:
        try:
            np.save(args.npy, images)
        except OSError as e:
            raise ConfigError(f"--npy {args.npy}: cannot write ({e.strerror or e})") from None
    print(f"wrote {path}" + (f" and {args.npy}" if args.npy else ""))
    return 0


def _reconstruct(args: argparse.Namespace) -> int:
    from variational.vae.pictures import save_reconstructions

    _check_outputs([("--out", Path(args.out or Path(args.run_dir) / "reconstructions.png"))])
    model, data = _model_and_test(args.run_dir)
    path = save_reconstructions(
        model, data.x_test, Path(args.out or Path(args.run_dir) / "reconstructions.png"), n=args.n
    )
    print(f"wrote {path}")
    return 0


def _latent(args: argparse.Namespace) -> int:
    from variational.vae.pictures import save_interpolation, save_latent

    _check_outputs(
        [("--out", Path(args.out or Path(args.run_dir) / "latent.png"))]
        + ([("--interpolation", Path(args.interpolation))] if args.interpolation else [])
    )
    model, data = _model_and_test(args.run_dir)
    path = save_latent(
        model,
        data.x_test[:2000],
        None if data.y_test is None else data.y_test[:2000],
        Path(args.out or Path(args.run_dir) / "latent.png"),
    )
    print(f"wrote {path}")
    if args.interpolation:
        print(f"wrote {save_interpolation(model, data.x_test, Path(args.interpolation))}")
    return 0


def _check_outputs(outputs: list[tuple[str, Path]]) -> None:
    """A ConfigError naming the option and path whose folder is missing or not writable."""
    import os

    for option, path in outputs:
        folder = path.parent
        if path.is_dir():
            raise ConfigError(f"{option} {path}: is a folder; give a file name")
        if not folder.is_dir():
            raise ConfigError(f"{option} {path}: the folder {folder} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(f"{option} {path}: the folder {folder} is not writable")


def _model_and_test(run_dir: str, device: str = "cpu"):
    """The run's model and its evaluation data (the test split, binarised as in training)."""
    from variational.vae import load
    from variational.vae.trainer import prepare_data

    model = load(run_dir, device=device)
    return model, prepare_data(model.config)


def _count(low: int):
    """argparse type: an integer >= low."""

    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text}")
        return value

    parse.__name__ = "integer"
    return parse


def _format_eval(result, dataset: str) -> str:
    def bits(value: float | None) -> str:
        return "" if value is None else f"  ({value:.4f} bits/dim)"

    lines = [
        f"{dataset} test set, {result.n_images} images:",
        f"  ELBO      {result.elbo:10.3f} nats/image{bits(result.elbo_bpd)}",
    ]
    if result.log_px is not None:
        lines.append(
            f"  log p(x)  {result.log_px:10.3f} nats/image{bits(result.log_px_bpd)}, "
            f"K={result.iw_samples}, s.e. {result.log_px_stderr:.3f}"
        )
    if result.note:
        lines.append(f"  note: {result.note}")
    return "\n".join(lines)


def _write_json(path: Path, obj: dict) -> None:
    from variational.io import save_json

    save_json(path, obj)
