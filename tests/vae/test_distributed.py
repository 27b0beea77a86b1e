"""VAE training on torch.distributed: the shares of a global batch tile it exactly, two Gloo ranks
under torchrun reproduce one process at the same global batch and seed, the sharded evaluation
equals the single-process one, a signal to one rank stops all at one step, a DDP run resumes
exactly (on any number of ranks), and a stalled rank ends the job with a clear message."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from variational import data
from variational.vae import VAE, VAEConfig, distributed, evaluate, load, pictures, resume, train
from variational.vae.distributed import Group, ShareNoise, share
from variational.vae.evaluation import elbo_per_image, log_px_per_image

WORKER = Path(__file__).with_name("ddp_worker.py")
# Small and quick, with the paths that draw randomness per batch: dynamic binarisation and IWAE
# noise of shape (k, batch, latent); 101 is odd, so the two ranks' shares differ by one image.
FLAGS = ["--hidden", "64", "--latent-dim", "4", "--batch-size", "101", "--binarize", "dynamic", "--iw-k", "3"]
CONFIG = VAEConfig(hidden=[64], latent_dim=4, batch_size=101, binarize="dynamic", iw_k=3, epochs=2)


# The in-process single-rank runs use one torch thread, as the ranks do (torchrun sets
# OMP_NUM_THREADS=1): tests/conftest.py sets it for the whole suite.


# --- shares of a global batch (no process group needed) ---------------------------------------


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("total", [0, 1, 5, 101, 128])
def test_shares_tile_the_batch_like_tensor_split(total, world):
    parts = [share(total, Group(r, world)) for r in range(world)]
    expected = torch.tensor_split(torch.arange(total), world)
    assert all(torch.equal(torch.arange(p.start, p.stop), e) for p, e in zip(parts, expected))
    assert parts[0].start == 0 and parts[-1].stop == total
    assert all(a.stop == b.start for a, b in zip(parts, parts[1:]))


@pytest.mark.parametrize("shape", [(101, 4), (3, 101, 4)])
def test_share_noise_tiles_the_single_process_draw(shape):
    like = torch.zeros(())
    g = torch.Generator().manual_seed(5)
    whole = torch.randn(shape, generator=g)
    pieces = []
    for r in range(3):
        gr = torch.Generator().manual_seed(5)  # every rank holds the same generator
        part = share(101, Group(r, 3))
        local = (*shape[:-2], part.stop - part.start, shape[-1])
        pieces.append(ShareNoise(gr, part).randn(local, like))
        assert torch.equal(gr.get_state(), g.get_state())  # and leaves it where one process would
    assert torch.equal(torch.cat(pieces, dim=-2), whole)  # bit for bit


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    model = VAE(VAEConfig(hidden=[32], latent_dim=3), (28, 28)).eval()
    return model, data.load("digits").test.images[:37]


def _reassemble(per_rank: list[torch.Tensor], total: int, batch: int, world: int) -> torch.Tensor:
    """Undo the per-batch sharding: rank r returned its rows of batch 1, then of batch 2, ..."""
    cursors, out = [0] * world, []
    for start in range(0, total, batch):
        for r in range(world):
            part = share(min(batch, total - start), Group(r, world))
            n = part.stop - part.start
            out.append(per_rank[r][cursors[r] : cursors[r] + n])
            cursors[r] += n
    return torch.cat(out)


def test_sharded_evaluation_equals_one_process_per_image(small):
    model, x = small
    world, seed = 3, 11
    one = elbo_per_image(model, x, batch_size=16, generator=torch.Generator().manual_seed(seed))
    ranks = [
        elbo_per_image(model, x, batch_size=16, generator=torch.Generator().manual_seed(seed), group=Group(r, world))
        for r in range(world)
    ]
    # The same images with the same noise; only the matrix-multiply batch size differs, which moves
    # the last bits of a ~500-nat value (measured: 1.1e-7 relative, 2 float32 ulps).
    torch.testing.assert_close(_reassemble(ranks, len(x), 16, world), one, rtol=1e-6, atol=0)
    one = log_px_per_image(model, x, k=20, batch_size=10, generator=torch.Generator().manual_seed(seed))
    ranks = [
        log_px_per_image(
            model, x, k=20, batch_size=10, generator=torch.Generator().manual_seed(seed), group=Group(r, world)
        )
        for r in range(world)
    ]
    torch.testing.assert_close(_reassemble(ranks, len(x), 10, world), one, rtol=1e-6, atol=0)


def test_scaled_share_gradients_average_to_the_global_batch_gradient(small):
    """What DDP does (average the ranks' gradients) gives the single-process gradient of the batch mean."""
    model, x = small
    x = torch.cat([x] * 3)[:101]  # 101 images over 3 ranks: shares of 34, 34 and 33

    def grads(loss: torch.Tensor) -> list[torch.Tensor]:
        return torch.autograd.grad(loss, list(model.parameters()))

    one = grads(-model.elbo(x, generator=torch.Generator().manual_seed(2)).mean())
    world, summed = 3, None
    for r in range(world):
        part, noise = distributed.rows(x, torch.Generator().manual_seed(2), Group(r, world))
        g = grads(-model.elbo(part, generator=noise).sum() * (world / len(x)))
        summed = g if summed is None else [a + b for a, b in zip(summed, g)]
    for a, b in zip(summed, one):
        # float32 sums in another order: gradients are O(1) and differ by <= 3.6e-7 (measured).
        torch.testing.assert_close(a / world, b, rtol=1e-5, atol=2e-6)


def test_setup_rejects_devices_it_cannot_shard(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="runs on cuda \\(NCCL\\) or cpu \\(Gloo\\), not on device 'mps'"):
        distributed.setup("mps")
    with pytest.raises(ValueError, match="give --device cuda, not cuda:1"):
        distributed.setup("cuda:1")
    with pytest.raises(ValueError, match="timeout must be positive"):
        distributed.setup("cpu", timeout_s=0)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.setup("cpu") is None and distributed.current() is None  # one process: no group


# --- two Gloo ranks under torchrun ------------------------------------------------------------


def _torchrun(*args: str, timeout: float) -> subprocess.CompletedProcess:
    # --standalone: a local c10d rendezvous on a free port found at run time.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(WORKER), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def _params(model: VAE) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """2-rank runs: A (2 epochs); B, stopped in epoch 2 by a SIGTERM to rank 1 alone, then resumed;
    C, B's interrupt checkpoint resumed by one process. And the one-process run `single`."""
    root = tmp_path_factory.mktemp("ddp")
    a, b, c = root / "A", root / "B", root / "C"
    done = _torchrun("runs", str(a), str(b), str(c), "--", *FLAGS, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pictures, "save_all", lambda *args: [])  # not what this test checks; they cost time
        single = train(CONFIG, root / "S", progress=False, log=lambda msg: None)
        resumed = resume(c, epochs=2, progress=False, log=lambda msg: None)  # 2-rank checkpoint, 1 process
    return {"A": a, "B": b, "C": c, "single": single, "resumed": resumed, "stdout": done.stdout, "stderr": done.stderr}


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_ranks_match_one_process_at_the_same_global_batch(runs):
    single, ddp = runs["single"], _metrics(runs["A"])
    assert [m["epoch"] for m in ddp] == [1, 2]
    for one, two in zip(single.metrics, ddp):
        # Same images, binarisation and noise; only float summation order differs (per-rank sums,
        # the gradient all-reduce). Measured: <= 8e-7 relative. A run with a different noise stream
        # differs by ~6e-4, so 1e-5 separates "the same computation" from "a statistically equal one".
        assert math.isclose(two["train_loss"], one["train_loss"], rel_tol=1e-5), (two, one)
        assert math.isclose(two["test_elbo"], one["test_elbo"], rel_tol=1e-5), (two, one)
    torch.manual_seed(CONFIG.seed)
    start = _params(VAE(CONFIG, (28, 28)))
    p1, p2 = _params(single.model), _params(load(runs["A"]))
    # Adam divides each gradient by its own running scale, so a rounding-level difference in a
    # near-zero gradient (pixels that are rarely on) can flip a step of size lr: parameters drift
    # apart by up to a few lr. Measured: |p2 - p1| / |p1 - start| = 0.0034 (max 0.003 per weight);
    # with a different noise stream it is 0.34. The bound 0.03 sits between them.
    assert ((p2 - p1).norm() / (p1 - start).norm()).item() < 0.03
    assert "2 ranks (gloo), global batch 101 = 50-51 per rank" in runs["stdout"]
    assert runs["stdout"].count("epoch   2/2") == 2  # A and B's resume: rank 0 alone logs
    assert runs["stdout"].count("epoch   1/2") == 2  # A and B
    assert {p.name for p in runs["A"].iterdir()} == {
        "config.json",
        "metrics.jsonl",
        "checkpoint.safetensors",
        "model.safetensors",
        "evaluation.json",
    }


def test_sharded_evaluation_equals_one_process(runs):
    written = json.loads((runs["A"] / "evaluation.json").read_text())  # computed by 2 ranks
    ddp_model = load(runs["A"])
    one = evaluate(ddp_model, runs["single"].data.x_test, iw_samples=50, seed=CONFIG.seed)
    assert written["n_images"] == one.n_images == 297
    # Same weights, images and noise; float32 mean against float64 sums of the ranks' shares.
    for key in ("elbo", "log_px", "log_px_stderr"):
        assert math.isclose(written[key], getattr(one, key), rel_tol=1e-6), (key, written[key], getattr(one, key))


def test_a_signal_to_one_rank_stops_all_at_the_same_step_and_resume_is_exact(runs):
    # Rank 1 alone got SIGTERM after epoch 2, step 5; the ranks agree at the next step's all-reduce.
    assert "variational: stopped by signal on another rank at epoch 2, step 6; checkpoint saved" in runs["stderr"]
    # B, resumed on 2 ranks from that mid-epoch checkpoint, is A's uninterrupted run bit for bit.
    assert torch.equal(_params(load(runs["B"])), _params(load(runs["A"])))
    assert _metrics(runs["B"]) == [
        {**m, "seconds": b["seconds"]} for m, b in zip(_metrics(runs["A"]), _metrics(runs["B"]))
    ]
    # C: the same checkpoint resumed by one process. The rest of epoch 2 is then the single-process
    # computation, so it meets the one-process run within the tolerances of the test above.
    resumed, single = runs["resumed"], runs["single"]
    assert math.isclose(resumed.metrics[1]["train_loss"], single.metrics[1]["train_loss"], rel_tol=1e-5)
    torch.manual_seed(CONFIG.seed)
    start, p1 = _params(VAE(CONFIG, (28, 28))), _params(single.model)
    assert ((_params(resumed.model) - p1).norm() / (p1 - start).norm()).item() < 0.03


def test_a_stalled_rank_ends_the_job_with_a_clear_message(tmp_path):
    out = tmp_path / "stall"
    # A hang would raise subprocess.TimeoutExpired at 120 s; the job takes ~15 s on this machine.
    done = _torchrun("stall", str(out), "--", *FLAGS, "--dist-timeout", "3", timeout=120)
    assert done.returncode != 0
    message = [ln for ln in done.stderr.splitlines() if ln.startswith("variational: error:")]
    assert len(message) == 1 and "rank 0 of 2:" in message[0] and "failed (" in message[0], done.stderr[-3000:]
    assert "Timed out" in message[0] and "stalled past the timeout (--dist-timeout)" in message[0]
    # Rank 1 stalled in epoch 2; rank 0 gave up after the 3 s timeout; the epoch-1 checkpoint stands.
    assert _metrics(out)[-1]["epoch"] == 1 and (out / "checkpoint.safetensors").is_file()
