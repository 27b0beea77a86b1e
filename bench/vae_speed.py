"""Benchmark: our VAE trainer against the source texts' own training loop, on Fashion-MNIST.

Both train the reference model (MLP 784-400-20, ReLU, sigmoid/Bernoulli output, BCE summed over
pixels + analytic KL, Adam 1e-3, batch 128) for the same number of epochs, in one process, taking
turns epoch by epoch:

- "plain loop": the texts' loop written plainly: a torch DataLoader over a dataset that returns one
  (image, label) pair at a time the way torchvision's MNIST class with `ToTensor()` does (a PIL
  image per access, converted to a float tensor), the model's forward returning
  (recon, mu, logvar), the loss BCE(sum) + KLD, test loss per image after each epoch;
- "variational": `variational.vae.train` (vae/trainer.py) with the `reference` preset.

A third figure times the matrix products of the same training steps alone (the forward and
backward GEMMs of the four layers at batch 128, without the input gradient of the first layer,
which no trainer needs), the floor any fp32 trainer of this model pays on this machine; one epoch's
worth is timed just before and just after each of our epochs, and the two are averaged.

    python bench/vae_speed.py --epochs 3              # needs Fashion-MNIST (apt-get install dataset-fashion-mnist)
    python bench/vae_speed.py --iw 5000               # also time the K=5000 log p(x) estimate on the test set

Prints a table (seconds per epoch, ratio, test loss after each epoch). Not a test.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from variational import data as datasets
from variational import vae
from variational.vae.fastpath.memory import keep_freed_memory


# ---------------------------------------------------------------------------------------------
# The texts' loop, written plainly.
class PerImage(Dataset):
    """torchvision's MNIST-family dataset, reproduced: each access builds a PIL image from the uint8
    array and converts it as `transforms.ToTensor()` does, returning (image, label)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = Image.fromarray(self.images[i], mode="L")
        pixels = torch.from_numpy(np.array(img, np.uint8, copy=True))
        tensor = pixels.view(img.size[1], img.size[0], 1).permute(2, 0, 1).contiguous()
        return tensor.float().div(255), int(self.labels[i])


class PlainVAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
        self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def forward(self, x):
        h = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def plain_loss(recon, x, mu, logvar):
    bce = F.binary_cross_entropy(recon, x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


class PlainLoop:
    """The texts' loop, one epoch per call: (seconds training, test loss per image)."""

    def __init__(self, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]):
        torch.manual_seed(0)
        self.model = PlainVAE()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.train_loader = DataLoader(PerImage(*train), batch_size=128, shuffle=True)
        self.test_loader = DataLoader(PerImage(*test), batch_size=128)

    def epoch(self) -> tuple[float, float]:
        model, opt = self.model, self.opt
        model.train()
        t0 = time.perf_counter()
        for x, _ in self.train_loader:
            opt.zero_grad()
            loss = plain_loss(*_fwd(model, x))
            loss.backward()
            opt.step()
        seconds = time.perf_counter() - t0
        model.eval()
        with torch.no_grad():
            total = sum(plain_loss(*_fwd(model, x)).item() for x, _ in self.test_loader)
        return seconds, total / len(self.test_loader.dataset)


def _fwd(model, x):
    recon, mu, logvar = model(x)
    return recon, x, mu, logvar


# ---------------------------------------------------------------------------------------------
def our_epoch(epoch: int, out: Path) -> tuple[tuple[float, float], vae.Run]:
    """Train `variational` to `epoch` epochs in `out`, resuming the run there after the first; the
    result equals one uninterrupted run (the trainer's resume is exact on CPU)."""
    if epoch == 1:
        cfg = vae.VAEConfig(preset="reference", dataset="fashion-mnist", epochs=1, seed=0)
        run = vae.train(cfg, out, progress=False, log=lambda m: None)
    else:
        run = vae.resume(out, epochs=epoch, progress=False, log=lambda m: None)
    m = run.metrics[-1]
    return (m["seconds"], -m["test_elbo"]), run


def matmul_floor(steps: int, batch: int = 128, repeats: int = 1) -> float:
    """Seconds for the forward and backward GEMMs of `steps` training steps of the 784-400-20 MLP."""
    layers = [(784, 400), (400, 40), (20, 400), (400, 784)]  # fc21 and fc22 fused as one 400x40 GEMM
    ws = [torch.randn(o, i) * 0.01 for i, o in layers]
    xs = [torch.randn(batch, i) for i, _ in layers]
    gs = [torch.randn(batch, o) for _, o in layers]
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            for i, (w, x, g) in enumerate(zip(ws, xs, gs)):
                torch.mm(x, w.t())  # forward
                if i > 0:  # the images need no gradient: the first layer skips this product
                    torch.mm(g, w)  # gradient with respect to the layer's input
                torch.mm(g.t(), x)  # gradient with respect to the weight
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--iw", type=int, default=0, metavar="K", help="also time log p(x) with K samples on the test set"
    )
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        ds = datasets.load("fashion-mnist")
    except datasets.DatasetNotFoundError as e:
        print(e, file=sys.stderr)
        return 2
    # Freed blocks stay with the process for all three loops alike (our trainer would set this in its
    # first epoch anyway): without it, whether a GEMM's output lands on fresh pages, each a page fault,
    # depends on the process's allocation history, and the GEMMs alone measured 2.6 or 3.5 ms a step.
    keep_freed_memory()
    train_u8 = (ds.train.images * 255).round().to(torch.uint8).numpy()
    test_u8 = (ds.test.images * 255).round().to(torch.uint8).numpy()

    # The three loops take turns, epoch by epoch, and each ratio is taken within one round: this
    # machine's speed drifts by several percent over minutes.
    plain = PlainLoop((train_u8, ds.train.labels.numpy()), (test_u8, ds.test.labels.numpy()))
    steps = math.ceil(len(train_u8) / 128)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for epoch in range(1, args.epochs + 1):
            p = plain.epoch()
            before = matmul_floor(steps)
            o, run = our_epoch(epoch, Path(tmp) / "run")
            # The GEMMs are timed on both sides of our epoch and averaged: the machine's speed
            # changes over seconds (a shared virtual machine), and the average takes
            # out a steady drift across our epoch (not faster changes).
            rows.append((p, o, (before + matmul_floor(steps)) / 2))

    print(
        f"Fashion-MNIST, reference VAE 784-400-20, batch 128, Adam 1e-3, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"{'epoch':>5} | {'plain loop s':>12} | {'variational s':>13} | {'speed-up':>8} | {'GEMMs s':>7} | "
        f"{'x GEMMs':>7} | {'plain test loss':>15} | {'variational test loss':>21}"
    )
    print("-" * 112)
    for i, ((ps, pl), (os_, ol), fs) in enumerate(rows, 1):
        print(
            f"{i:>5} | {ps:12.2f} | {os_:13.2f} | {ps / os_:7.1f}x | {fs:7.2f} | {os_ / fs:6.2f}x | "
            f"{pl:15.2f} | {ol:21.2f}"
        )
    mean_plain, mean_ours, mean_floor = (np.mean([r[k][0] if k < 2 else r[k] for r in rows]) for k in range(3))
    print("-" * 112)
    print(
        f"mean seconds per epoch: plain {mean_plain:.2f}, variational {mean_ours:.2f} "
        f"({mean_plain / mean_ours:.1f}x faster)"
    )
    print(
        f"matrix products alone: {mean_floor:.2f} s per epoch; variational takes {mean_ours / mean_floor:.2f}x "
        f"that (epoch by epoch {min(r[1][0] / r[2] for r in rows):.2f}-{max(r[1][0] / r[2] for r in rows):.2f}x)"
    )

    if args.iw:
        t0 = time.perf_counter()
        result = vae.evaluate(run.model, run.data.x_test, iw_samples=args.iw, progress=True)
        print(
            f"log p(x) with K={args.iw} on {result.n_images} test images: {result.log_px:.2f} nats "
            f"(ELBO {result.elbo:.2f}), {time.perf_counter() - t0:.0f} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
