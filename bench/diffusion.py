"""Benchmarks of `variational.diffusion` (prints tables; not tests).

1. Training speed on Fashion-MNIST: our trainer against the training loop of diffusers' unconditional
   example written plainly (a DataLoader over per-image tensors, `DDPMScheduler.add_noise`, epsilon MSE,
   AdamW, diffusers' `EMAModel`, gradient clipping) on the same U-Net and data, and against the network's
   forward + backward + optimizer step alone on pre-made batches. Our trainer runs the same objective
   (L_simple, fixed variance) so that the loops, not the losses, are compared.
2. Evaluation: the full T-term bound against the S-sampled-t estimate on the same test images: value,
   standard error, seconds and network rows.
3. Likelihood on dynamically binarised Fashion-MNIST (2-level decoder), in nats: our DDPM's bound beside
   our VAE's importance-weighted log p(x) and published VAE rows, after the training budget printed.

    python bench/diffusion.py                                    # the full bench (long on a CPU)
    python bench/diffusion.py --fraction 0.02 --epochs 1 --eval-images 20 --likelihood-epochs 1 --iw-k 100
    python bench/diffusion.py --device cuda --preset base        # on a GPU

Needs `diffusers` for part 1 (`pip install diffusers`; `--skip speed` without it) and Fashion-MNIST
(`apt-get install dataset-fashion-mnist`, or `--data-dir`).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from variational import diffusion
from variational.diffusion.config import DiffusionConfig
from variational.diffusion.unet import UNet
from variational.training.data import load_images

# Exemplar VAE paper (Norouzi et al. 2020, table 2): -log p(x) in nats on dynamically binarised Fashion-MNIST.
PUBLISHED = [("VAE (published, Exemplar-VAE paper)", 228.70), ("HVAE + VampPrior (published, same paper)", 226.72)]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    torch.manual_seed(0)
    print(
        f"# variational.diffusion bench: {args.dataset}, preset {args.preset}, T = {args.timesteps}, "
        f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    if args.device.startswith("cuda"):
        print(f"# GPU: {torch.cuda.get_device_name(args.device)}")
    with tempfile.TemporaryDirectory() as tmp:
        model = None
        if "speed" not in args.skip:
            model = bench_speed(args, Path(tmp))
        if "eval" not in args.skip:
            bench_eval(args, model, Path(tmp))
        if "likelihood" not in args.skip:
            bench_likelihood(args, Path(tmp))
    return 0


def _config(args: argparse.Namespace, **kwargs) -> DiffusionConfig:
    values = {
        "dataset": args.dataset,
        "data_dir": args.data_dir,
        "preset": args.preset,
        "timesteps": args.timesteps,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "ema": 0.9999,
        "device": args.device,
        "eval_images": min(args.eval_images, 100),
        "eval_t_samples": 1,
    }
    return DiffusionConfig(**{**values, **kwargs})


def _subset_npz(args: argparse.Namespace, out: Path, binarize: bool = False) -> str:
    """The dataset itself, or (with --fraction) its first share of training images saved as an .npz."""
    if args.fraction >= 1:
        return args.dataset
    data = load_images(args.dataset, args.data_dir)
    n = max(args.batch_size, int(len(data.x_train) * args.fraction))
    import numpy as np

    path = out / f"subset-{n}.npz"
    np.savez(path, x_train=data.x_train[:n].numpy(), x_test=data.x_test.numpy())
    return str(path)


# ------------------------------------------------------------------ 1. training speed


def bench_speed(args: argparse.Namespace, tmp: Path):
    dataset = _subset_npz(args, tmp)
    config = _config(args, dataset=dataset, objective="simple", variance="small")
    run = diffusion.train(config, tmp / "speed", progress=False, log=lambda m: None)
    ours = [m["seconds"] for m in run.metrics]
    data = load_images(dataset, args.data_dir, device=args.device)
    x = (data.x_train * 2 - 1).unsqueeze(1)  # the same [-1, 1] scaling (no 8-bit rounding needed for speed)
    theirs = _diffusers_loop(args, config, x)
    alone = _network_alone(args, config, x)
    n = len(x)
    print(
        f"\n## 1. Training speed: {n} images of {tuple(x.shape[2:])}, batch {args.batch_size}, "
        f"{sum(p.numel() for p in run.model.parameters()):,} parameters, seconds per epoch (median of {len(ours)})"
    )
    rows = [
        ("variational.diffusion trainer", _median(ours)),
        ("diffusers example loop", _median(theirs)),
        ("network step alone (fwd+bwd+Adam)", _median(alone)),
    ]
    print("| loop | s/epoch | images/s | vs ours |\n|---|---:|---:|---:|")
    for name, s in rows:
        print(f"| {name} | {s:.2f} | {n / s:.0f} | {s / rows[0][1]:.2f}x |")
    print(
        f"\nours / diffusers loop = {rows[0][1] / rows[1][1]:.2f} (target < 1); "
        f"ours / network alone = {rows[0][1] / rows[2][1]:.2f} (target <= 1.25)"
    )
    return run.model


def _net(config: DiffusionConfig, size: int) -> UNet:
    torch.manual_seed(config.seed)
    return UNet(config.unet_spec(), 1, 1, image_size=size).to(config.device)


def _diffusers_loop(args: argparse.Namespace, config: DiffusionConfig, x: torch.Tensor) -> list[float]:
    """diffusers' examples/unconditional_image_generation/train_unconditional.py, without accelerate."""
    try:
        from diffusers import DDPMScheduler
        from diffusers.training_utils import EMAModel
    except ImportError:
        print("diffusers is not installed: pip install diffusers, or --skip speed", file=sys.stderr)
        raise
    net = _net(config, x.shape[-1])
    scheduler = DDPMScheduler(num_train_timesteps=config.timesteps, beta_schedule="squaredcos_cap_v2")
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr)
    ema = EMAModel(net.parameters(), decay=0.9999)
    images = [img.cpu() for img in x]  # a dataset of per-image tensors, as their image folder gives
    loader = torch.utils.data.DataLoader(images, batch_size=config.batch_size, shuffle=True)
    times = []
    for _ in range(config.epochs):
        start = time.perf_counter()
        for clean in loader:
            clean = clean.to(config.device)
            noise = torch.randn_like(clean)
            t = torch.randint(0, config.timesteps, (len(clean),), device=clean.device)
            noisy = scheduler.add_noise(clean, noise, t)
            loss = F.mse_loss(net(noisy, t), noise)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
            ema.step(net.parameters())
        _sync(config.device)
        times.append(time.perf_counter() - start)
    return times


def _network_alone(args: argparse.Namespace, config: DiffusionConfig, x: torch.Tensor) -> list[float]:
    net = _net(config, x.shape[-1])
    opt = torch.optim.Adam(net.parameters(), lr=config.lr, fused=torch.device(config.device).type in ("cpu", "cuda"))
    bs = config.batch_size
    batches = [
        (
            x[i : i + bs],
            torch.randint(0, config.timesteps, (len(x[i : i + bs]),), device=x.device),
            torch.randn_like(x[i : i + bs]),
        )
        for i in range(0, len(x), bs)
    ]
    times = []
    for _ in range(config.epochs):
        start = time.perf_counter()
        for xb, t, noise in batches:
            loss = F.mse_loss(net(xb, t), noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync(config.device)
        times.append(time.perf_counter() - start)
    return times


# ------------------------------------------------------------------ 2. evaluation


def bench_eval(args: argparse.Namespace, model, tmp: Path) -> None:
    if model is None:
        run = diffusion.train(
            _config(args, dataset=_subset_npz(args, tmp), epochs=1), tmp / "eval", progress=False, log=lambda m: None
        )
        model = run.model
    data = load_images(args.dataset, args.data_dir, device=args.device)
    x = data.x_test[: args.eval_images]
    print(f"\n## 2. Evaluation: the bound on {len(x)} test images, T = {model.timesteps}, batch {args.eval_batch} rows")
    print(
        "| estimator | -log p(x) <= (nats) | SE | bits/dim | SE | seconds | network rows |\n|---|---:|---:|---:|---:|---:|---:|"
    )
    timings = {}
    for s in (None, args.t_samples):
        g = torch.Generator(device=args.device).manual_seed(1)
        start = time.perf_counter()
        b = model.nll(x, t_samples=s, batch_size=args.eval_batch, generator=g)
        _sync(args.device)
        timings[s] = time.perf_counter() - start
        name = "full sum over all T" if s is None else f"{s} sampled t per image"
        rows = len(x) * (model.timesteps if s is None else s + 1)  # the sampled estimate adds L_0's row
        print(
            f"| {name} | {b.nats:.2f} | {b.stderr:.2f} | {b.bits_per_dim:.4f} | {b.bits_per_dim_stderr:.4f} | "
            f"{timings[s]:.1f} | {rows:,} |"
        )
        timings[("b", s)] = b
    full, est = timings[("b", None)], timings[("b", args.t_samples)]
    z = (est.nats - full.nats) / math.hypot(est.stderr, full.stderr)
    print(
        f"\nestimate - full = {est.nats - full.nats:+.2f} nats ({z:+.1f} combined SE); "
        f"time ratio full / estimate = {timings[None] / timings[args.t_samples]:.0f}x"
    )


# ------------------------------------------------------------------ 3. likelihood table


def bench_likelihood(args: argparse.Namespace, tmp: Path) -> None:
    from variational import vae

    dataset = _subset_npz(args, tmp)
    config = _config(args, dataset=dataset, binarize="dynamic", epochs=args.likelihood_epochs)
    start = time.perf_counter()
    run = diffusion.train(config, tmp / "likelihood", progress=False, log=lambda m: None)
    ddpm_minutes = (time.perf_counter() - start) / 60
    x = run.data.x_test[: args.eval_images]  # the fixed binarisation of the test set (seed + 1), as the VAE's
    g = torch.Generator(device=args.device).manual_seed(2)
    bound = run.model.nll(x, t_samples=args.t_samples, batch_size=args.eval_batch, generator=g)
    vconfig = vae.VAEConfig(
        preset="conv",
        dataset=dataset,
        data_dir=args.data_dir,
        binarize="dynamic",
        epochs=args.vae_epochs,
        device=args.device,
    )
    start = time.perf_counter()
    vrun = vae.train(vconfig, tmp / "vae", progress=False, log=lambda m: None)
    vae_minutes = (time.perf_counter() - start) / 60
    assert torch.equal(vrun.data.x_test[: args.eval_images], x), "the VAE and the DDPM must score the same test images"
    ev = vae.evaluate(vrun.model, x, iw_samples=args.iw_k, seed=0)
    print(
        f"\n## 3. Dynamically binarised {args.dataset}: -log p(x) in nats on {len(x)} test images (fixed binarisation)"
    )
    print("| model | training | -log p(x) (nats) | SE | how |\n|---|---|---:|---:|---|")
    print(
        f"| DDPM ({args.preset} U-Net, T = {args.timesteps}, 2-level decoder) | {args.likelihood_epochs} epochs, "
        f"{ddpm_minutes:.1f} min | <= {bound.nats:.2f} | {bound.stderr:.2f} | bound, {args.t_samples} sampled t per image |"
    )
    print(
        f"| VAE (conv preset) | {args.vae_epochs} epochs, {vae_minutes:.1f} min | {-ev.log_px:.2f} | "
        f"{ev.log_px_stderr:.2f} | IW estimate, K = {args.iw_k} |"
    )
    for name, value in PUBLISHED:
        print(f"| {name} | | {value:.2f} | | published |")


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir")
    p.add_argument("--fraction", type=float, default=1.0, help="train on this share of the training set (short runs)")
    p.add_argument("--preset", default="small")
    p.add_argument("--timesteps", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=2, help="epochs of the speed comparison")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--eval-images", type=int, default=500)
    p.add_argument("--eval-batch", type=int, default=1000, help="network rows per call in the evaluation")
    p.add_argument("--t-samples", type=int, default=10)
    p.add_argument("--likelihood-epochs", type=int, default=10)
    p.add_argument("--vae-epochs", type=int, default=10)
    p.add_argument("--iw-k", type=int, default=5000)
    p.add_argument("--skip", nargs="*", default=[], choices=["speed", "eval", "likelihood"])
    return p


if __name__ == "__main__":
    raise SystemExit(main())
