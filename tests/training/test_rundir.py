"""The run directory: one writer (flock), stale locks and temporaries, metrics cut back on resume."""

import os
import signal
import subprocess
import sys

import pytest

from variational.errors import CheckpointError, RunLockedError
from variational.io import save_json
from variational.training import MetricsLog, RunDirectory, RunLock
from variational.training.lock import LOCK_FILE


def test_a_second_writer_is_refused_naming_the_directory_and_holder(tmp_path):
    with (
        RunDirectory(tmp_path / "run"),
        pytest.raises(RunLockedError, match=f"{tmp_path / 'run'} is in use by process {os.getpid()}"),
    ):
        RunDirectory(tmp_path / "run").__enter__()
    with RunDirectory(tmp_path / "run") as again:  # released on exit: the next writer gets it
        assert again.stale_holder is None
    assert not (tmp_path / "run" / LOCK_FILE).exists()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    code = (
        "import sys, time\nfrom variational.training import RunLock\n"
        f"RunLock({str(run)!r}).acquire(); print('locked', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"in use by process {holder.pid}"):
            RunLock(run).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert (run / LOCK_FILE).exists()  # kill -9 leaves the file, but no lock
    with RunDirectory(run) as taken:
        assert taken.stale_holder == holder.pid


def test_stale_temporaries_are_removed_under_the_lock(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".checkpoint.safetensors.abc123.tmp").write_bytes(b"half")
    (run / "keep.tmp").write_text("not ours: no leading dot")
    save_json(run / "config.json", {"a": 1})
    with RunDirectory(run) as held:
        assert [p.name for p in held.removed] == [".checkpoint.safetensors.abc123.tmp"]
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "keep.tmp"]


def test_unusable_paths_are_one_error_naming_them(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CheckpointError, match="cannot create the run directory .*file/run"):
        RunDirectory(blocker / "run").__enter__()
    with pytest.raises(CheckpointError, match="no such run directory"):
        RunDirectory(tmp_path / "absent", create=False).__enter__()


def test_a_failed_start_leaves_no_empty_directory(tmp_path):
    with pytest.raises(ZeroDivisionError), RunDirectory(tmp_path / "new"):
        raise ZeroDivisionError
    assert not (tmp_path / "new").exists()


def test_metrics_are_cut_back_to_the_completed_epochs(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.start()
    for epoch in (1, 2, 3):
        log.append({"epoch": epoch, "loss": epoch / 2})
    assert log.restore(completed=2) == [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 1.0}]
    assert len(log.path.read_text().splitlines()) == 2
    with pytest.raises(CheckpointError, match="holds 2 epoch\\(s\\) but the checkpoint has completed 3"):
        log.restore(completed=3)
    log.path.write_text('{"epoch": 1}\n{"epoch": 2, "lo')  # killed while appending epoch 2's row
    assert log.restore(completed=1) == [{"epoch": 1}]
    log.path.write_text('{"epoch": 1}\nnot json\n')
    with pytest.raises(CheckpointError, match="line 2: not valid JSON"):
        log.restore(completed=2)


def test_a_non_finite_metric_is_written_as_null(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.start()
    log.append({"epoch": 1, "test_elbo": float("nan")})
    assert log.path.read_text() == '{"epoch": 1, "test_elbo": null}\n'
