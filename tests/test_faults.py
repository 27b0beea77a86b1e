"""Faults a training run must survive or refuse clearly (issue #12 §4).

- kill -9 at points of training, inside checkpoint writes included, then resume: the run equals the
  uninterrupted one bit for bit (weights, Adam state, generator, metrics but the wall-clock seconds);
- a second writer and a --resume are refused while a run is in progress; after kill -9 the stale
  lock is taken over;
- damaged, cut and edited checkpoints and NaN weights: one CheckpointError naming the file and cause;
- a finished run whose pictures were never drawn is completed by a resume; NaN weights never reach
  `eval` output;
- the config loader raises nothing but VariationalError for any JSON/TOML value or file content.

The trainers run on digits8 (8x8 images) with a tiny model: a few seconds each on 2 cores.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from variational import io, vae
from variational.cli import main
from variational.errors import CheckpointError, RunLockedError, VariationalError
from variational.vae import pictures
from variational.vae.config import VAEConfig, read_config_file
from variational.vae.trainer import CHECKPOINT, METRICS, WEIGHTS

TINY = {
    "dataset": "digits8",
    "hidden": [16],
    "latent_dim": 2,
    "epochs": 3,
    "batch_size": 100,
    "seed": 3,
    "binarize": "dynamic",
}  # 15 steps an epoch; dynamic binarisation draws from the run's generator too
STEPS = 15

# The trainer as a separate process, so that it can be killed with SIGKILL. KILL_AT=[epoch, step] kills
# it after that optimiser step; PAUSE_AT=[epoch, step] makes it announce itself in READY and sleep;
# VARIATIONAL_FAULT (variational/io.py) kills it inside an atomic write. Pictures are skipped: they
# are not what these tests check, and drawing them costs seconds.
WORKER = """
import json, os, signal, sys, time
import torch
torch.set_num_threads(1)  # as the in-process reference (tests/conftest.py): the same arithmetic
from variational import vae
from variational.vae import pictures
pictures.save_all = lambda *args: []
kill_at = json.loads(os.environ.get("KILL_AT", "null"))
pause_at = json.loads(os.environ.get("PAUSE_AT", "null"))

def on_step(epoch, step, loss):
    if [epoch, step] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    if [epoch, step] == pause_at:
        open(os.environ["READY"], "w").close()
        time.sleep(120)

vae.train(vae.VAEConfig(**json.loads(sys.argv[2])), sys.argv[1], progress=False, on_step=on_step, log=print)
"""


def _worker(out: Path, env: dict[str, str], config: dict = TINY) -> subprocess.Popen:
    full = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1", **env}
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(out), json.dumps(config)],
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def no_pictures(monkeypatch):
    monkeypatch.setattr(pictures, "save_all", lambda *args: [])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, in this process."""
    out = tmp_path_factory.mktemp("faults") / "reference"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pictures, "save_all", lambda *args: [])
        vae.train(VAEConfig(**TINY), out, progress=False, log=lambda m: None)
    return out


def _assert_same_run(run: Path, ref: Path) -> None:
    """Checkpoint (weights, Adam moments and step counts, generator), weights file and metrics are equal."""
    a, b = io.load_tensors(run / CHECKPOINT), io.load_tensors(ref / CHECKPOINT)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    meta_a, meta_b = io.read_metadata(run / CHECKPOINT), io.read_metadata(ref / CHECKPOINT)
    for key in ("state", "optim_scalars", "optim_groups"):
        assert meta_a[key] == meta_b[key], key
    wa, wb = io.load_tensors(run / WEIGHTS), io.load_tensors(ref / WEIGHTS)
    assert all(torch.equal(wa[k], wb[k]) for k in wb) and wa.keys() == wb.keys()
    ma = [json.loads(line) for line in (run / METRICS).read_text().splitlines()]
    mb = [json.loads(line) for line in (ref / METRICS).read_text().splitlines()]
    assert [{**m, "seconds": 0} for m in ma] == [{**m, "seconds": 0} for m in mb]
    assert [m["epoch"] for m in ma] == [1, 2, 3]


_point = random.Random(2026)  # a kill point drawn once: the same on every run of the suite
KILLS = {
    "before-the-first-checkpoint": {"KILL_AT": "[0, 4]"},
    "random-step": {"KILL_AT": json.dumps([1 + _point.randrange(2), _point.randrange(STEPS)])},
    # Writes: 1 metrics.jsonl (empty), 2 config.json, 3 epoch 1's checkpoint, 4 its weights, 5 epoch 2's checkpoint.
    "inside-a-checkpoint-write": {"VARIATIONAL_FAULT": "write:5"},
    "inside-a-weights-write": {"VARIATIONAL_FAULT": "rename:4"},
}


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """Every kill scenario's run directory, the workers started together (their start-up is most of the time)."""
    root = tmp_path_factory.mktemp("killed")
    workers = {name: _worker(root / name, env) for name, env in KILLS.items()}
    for name, worker in workers.items():
        _, err = worker.communicate(timeout=240)
        assert worker.returncode == -signal.SIGKILL, (name, err[-2000:])
    return root


@pytest.mark.parametrize("name", KILLS)
def test_kill_9_then_resume_equals_the_uninterrupted_run(killed, reference, name, no_pictures):
    out = killed / name
    if "VARIATIONAL_FAULT" in KILLS[name]:  # killed between the write and the rename: a temporary file is left
        assert list(out.glob(".*.tmp"))
    if (out / CHECKPOINT).exists():
        vae.resume(out, progress=False, log=lambda m: None)
    else:  # killed before any checkpoint: nothing to resume, a new run starts over in the same place
        vae.train(VAEConfig(**TINY), out, progress=False, log=lambda m: None)
    assert not list(out.glob(".*.tmp"))
    _assert_same_run(out, reference)


def test_a_second_writer_and_a_resume_are_refused_and_a_killed_holder_is_taken_over(
    tmp_path, reference, no_pictures, capsys
):
    out, ready = tmp_path / "run", tmp_path / "ready"
    holder = _worker(out, {"PAUSE_AT": "[1, 0]", "READY": str(ready)})  # epoch 1's checkpoint is written
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert holder.poll() is None and time.monotonic() < deadline, holder.communicate()[1][-2000:]
            time.sleep(0.05)
        other_seed = VAEConfig(**{**TINY, "seed": 4})
        with pytest.raises(RunLockedError, match=f"{out} is in use by process {holder.pid}"):
            vae.train(other_seed, out, progress=False, log=lambda m: None)
        with pytest.raises(RunLockedError, match=f"in use by process {holder.pid}"):
            vae.resume(out, progress=False, log=lambda m: None)
        assert main(["vae", "train", "--resume", "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"in use by process {holder.pid}" in err, err
    finally:
        holder.kill()
        holder.communicate(timeout=30)
    messages: list[str] = []
    vae.resume(out, progress=False, log=messages.append)
    assert f"process {holder.pid} ended without releasing the run; taking it over" in messages[0]
    _assert_same_run(out, reference)  # the first writer's run, continued: seed 0's config and weights


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "one"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pictures, "save_all", lambda *args: [])
        vae.train(VAEConfig(**{**TINY, "epochs": 1}), out, progress=False, log=lambda m: None)
    return out


def _flip_a_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x40  # inside the last tensor's data
    path.write_bytes(bytes(raw))


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _edit_state(path: Path, checksum: str = "kept", **changes) -> None:
    """Rewrite the loop state as a hand edit would; `checksum`: kept (now stale) or legacy (recomputed as
    files written before the metadata was covered carry it: over the tensors only)."""
    meta, tensors = io.read_metadata(path), load_file(str(path))
    meta["state"] = json.dumps({**json.loads(meta["state"]), **changes})
    if checksum == "legacy":
        del meta["checksum"]
        meta["sha256"] = io._digest(tensors)
    save_file(tensors, str(path), metadata=meta)


def _nan_weights(path: Path) -> None:
    """NaN in a weight, written with a valid checksum: only the finiteness check can catch it."""
    meta, tensors = io.read_metadata(path), load_file(str(path))
    name = next(k for k in tensors if k.endswith("weight"))
    tensors[name].view(-1)[0] = float("nan")
    io.save_tensors(path, tensors, metadata=meta)


CORRUPTIONS = [
    pytest.param(_flip_a_byte, "does not match its checksum", id="flipped-byte"),
    pytest.param(_cut, "not a readable safetensors file", id="cut"),
    pytest.param(lambda p: _edit_state(p, step=99999), "does not match its checksum", id="edited-state"),
    pytest.param(
        lambda p: _edit_state(p, "legacy", epoch=0, step=99999, seen=9999900),
        "loop state does not fit .*step 99999 is outside 0..15",
        id="legacy-step",
    ),
    pytest.param(
        lambda p: _edit_state(p, "legacy", epoch=-4),
        "loop state does not fit .*epoch -4 is negative",
        id="legacy-epoch",
    ),
    pytest.param(_nan_weights, r"tensor 'model\..*weight' holds 1 non-finite value", id="nan-weights"),
]


@pytest.mark.parametrize("damage, cause", CORRUPTIONS)
def test_a_damaged_checkpoint_is_one_error_naming_file_and_cause(tmp_path, one_epoch, damage, cause, capsys):
    out = tmp_path / "run"
    shutil.copytree(one_epoch, out)
    damage(out / CHECKPOINT)
    with pytest.raises(CheckpointError, match=f"{out / CHECKPOINT}: .*{cause}"):
        vae.resume(out, epochs=2, progress=False, log=lambda m: None)
    assert main(["vae", "train", "--resume", "--out", str(out), "--epochs", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("variational: error: ") and CHECKPOINT in err, err


def test_resume_of_a_finished_run_draws_the_pictures_it_lacks(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "vae",
                "train",
                "--dataset",
                "digits8",
                "--hidden",
                "8",
                "--latent-dim",
                "2",
                "--epochs",
                "1",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    for name in ("interpolation.png", "curves.png"):  # as if killed while drawing them
        (out / name).unlink()
    capsys.readouterr()
    assert main(["vae", "train", "--resume", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert (out / "interpolation.png").is_file() and (out / "curves.png").is_file()
    listed = printed.split("run directory:")[1]
    assert "interpolation.png" in listed and "curves.png" in listed


def test_a_reported_picture_exists(tmp_path, capsys, monkeypatch):
    # A drawing step that writes nothing (a broken backend): the run lists nothing it did not write.
    monkeypatch.setattr(pictures, "save_all", lambda model, x, y, metrics, out: [out / "samples.png"])
    out = tmp_path / "run"
    assert (
        main(
            [
                "vae",
                "train",
                "--dataset",
                "digits8",
                "--hidden",
                "8",
                "--latent-dim",
                "2",
                "--epochs",
                "1",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    assert "png" not in capsys.readouterr().out.split("run directory:")[1]


def test_eval_refuses_nan_weights_and_never_prints_nan(tmp_path, one_epoch, capsys):
    out = tmp_path / "run"
    shutil.copytree(one_epoch, out)
    _nan_weights(out / WEIGHTS)
    assert main(["vae", "eval", str(out), "--iw-samples", "0", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert f"{out / WEIGHTS}: weight '" in captured.err and "non-finite" in captured.err
    # Finite weights so large that the decoder's output overflows: an error too, not "ELBO nan".
    meta, tensors = io.read_metadata(out / WEIGHTS), load_file(str(one_epoch / WEIGHTS))
    io.save_tensors(
        out / WEIGHTS, {k: v * 1e30 if k.endswith("weight") else v for k, v in tensors.items()}, metadata=meta
    )
    assert main(["vae", "eval", str(out), "--iw-samples", "0", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "cannot be evaluated" in captured.err and "Traceback" not in captured.err


def test_json_output_is_strict_even_for_a_non_finite_number():
    text = io.dumps_json({"elbo": float("nan"), "log_px": float("-inf")})
    assert json.loads(text) == {"elbo": None, "log_px": None}  # json.loads would accept NaN: check the text
    assert "NaN" not in text and "Infinity" not in text


# --- the config loader under random input ------------------------------------------------------

FIELDS = [f.name for f in dataclasses.fields(VAEConfig)]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-3, 1000)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(
        [
            "mlp",
            "conv",
            "bernoulli",
            "gaussian",
            "static",
            "dynamic",
            "none",
            "cpu",
            "cuda",
            "meta",
            "seed",
            "reference",
            "digits",
        ]
    )
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
CONFIGS = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), VALUES, max_size=8)
# Example budgets keep the module fast; the deadline turns a hang (or a huge allocation) into a failure.
PROPERTY = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(CONFIGS | VALUES)
def test_from_dict_raises_only_variational_errors(values):
    try:
        config = VAEConfig.from_dict(values)
    except VariationalError:
        return
    assert isinstance(config, VAEConfig) and config.latent_dim >= 1  # what it accepts is valid


def _toml(values: dict) -> str:
    lines = []
    for key, value in values.items():
        if isinstance(value, (bool, int, str)) or (isinstance(value, list) and all(isinstance(v, int) for v in value)):
            lines.append(f"{json.dumps(key)} = {json.dumps(value)}")
    return "\n".join(lines)


@PROPERTY
@given(
    st.one_of(
        CONFIGS.map(lambda v: (".json", json.dumps(v).encode())),
        VALUES.map(lambda v: (".json", json.dumps(v).encode())),
        CONFIGS.map(lambda v: (".toml", _toml(v).encode())),
        CONFIGS.map(lambda v: (".toml", ("[vae]\n" + _toml(v)).encode())),
        st.tuples(st.sampled_from([".json", ".toml", ".yaml"]), st.binary(max_size=200)),
        st.tuples(
            st.sampled_from([".json", ".toml"]), st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))
        ),
    )
)
def test_config_files_raise_only_variational_errors(file):
    suffix, content = file
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"run{suffix}"
        path.write_bytes(content)
        try:
            read_config_file(path)
            VAEConfig.from_file(path)
        except VariationalError:
            pass


def test_deeply_nested_json_is_an_error_not_a_crash(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(VariationalError, match="deep.json"):
        read_config_file(path)
