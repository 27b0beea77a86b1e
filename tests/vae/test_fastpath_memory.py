"""keep_freed_memory: what it asks glibc for, and the page faults it saves a training step."""

import subprocess
import sys

import pytest

from variational.vae.fastpath import memory

STEPS = """
import resource, sys, torch
from variational.vae.fastpath.memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
from variational.vae import VAE, VAEConfig
from variational.vae.fastpath import TrainingStep
torch.manual_seed(0)
vae = VAE(VAEConfig(preset="reference"), (28, 28))
# Multi-tensor Adam: its parameter-sized temporaries come and go each step (the fused kernel's do not)
step = TrainingStep(vae, torch.optim.Adam(vae.parameters(), lr=1e-3))
x = torch.rand(128, 28, 28)
def steps(n):
    for _ in range(n):
        step(x)
steps(5)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
steps(20)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


def faults_per_step(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_reference_model_steps_fault_without_it_and_not_with_it():
    # Measured here: 540-1160 minor faults a step with glibc's defaults (the step's buffers come
    # back as fresh pages); with the thresholds raised, none in most runs and up to 25 in a few
    # (faults the allocator does not cause), so the bound is a twentieth of the default's.
    default, keep = faults_per_step("default"), faults_per_step("keep")
    assert default > 100
    assert keep < default / 20


class Recorder:
    def __init__(self, answers):
        self.calls, self.answers = [], list(answers)

    def __call__(self, param, value):
        self.calls.append((param, value))
        return self.answers.pop(0)


def test_asks_for_both_thresholds_once(monkeypatch):
    recorder = Recorder([1, 1])
    monkeypatch.setattr(memory, "_applied", False)
    monkeypatch.setattr(memory, "_mallopt", lambda: recorder)
    monkeypatch.delenv(memory.OPT_OUT, raising=False)
    assert memory.keep_freed_memory() is True
    assert memory.keep_freed_memory() is True  # the second call asks nothing more
    assert recorder.calls == [(-3, 32 << 20), (-1, 256 << 20)]  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD


def test_a_refused_setting_reports_false(monkeypatch):
    monkeypatch.setattr(memory, "_applied", False)
    monkeypatch.setattr(memory, "_mallopt", lambda: Recorder([1, 0]))
    monkeypatch.delenv(memory.OPT_OUT, raising=False)
    assert memory.keep_freed_memory() is False


def test_opt_out_and_missing_mallopt_leave_malloc_alone(monkeypatch):
    recorder = Recorder([])
    monkeypatch.setattr(memory, "_applied", False)
    monkeypatch.setattr(memory, "_mallopt", lambda: recorder)
    monkeypatch.setenv(memory.OPT_OUT, "0")
    assert memory.keep_freed_memory() is False and recorder.calls == []
    monkeypatch.delenv(memory.OPT_OUT)
    monkeypatch.setattr(memory, "_mallopt", lambda: None)
    assert memory.keep_freed_memory() is False
