"""What every trainer shares: the run directory (one writer, atomic checkpoints, exact resume),
signals, metrics, progress, the NaN stop, an EMA of the parameters, and torchrun helpers.

One job per module:
    rundir       RunDirectory: lock + stale-temporary clean-up + the standard file names
    lock         RunLock: an exclusive flock on the run directory, RunLockedError for a second writer
    checkpoint   save_checkpoint / load_checkpoint: model, optimizer, generators, loop state, extras
    metrics      MetricsLog: metrics.jsonl, cut back to the completed epochs on resume
    signals      StopOnSignal (SIGINT/SIGTERM -> save and stop), TrainingInterrupted
    divergence   check_loss, TrainingDiverged (NaN stop naming epoch and step)
    progress     EpochBar: the tqdm bar with the running loss
    ema          EMA: moving average of the parameters, saved as checkpoint extras
    distributed  torchrun: process group session, rank and batch shares, collectives that fail loudly
    process      exit_process (torch-free: the command line imports it)

>>> from variational import training
>>> training.RunLock.__name__, training.EMA.__name__
('RunLock', 'EMA')

Names are imported on first use (PEP 562), so importing the package does not load torch.
"""

from __future__ import annotations

from variational._lazy import lazy_exports

_HOME = {
    "CHECKPOINT": "rundir",
    "RunDirectory": "rundir",
    "RunLock": "lock",
    "RunLockedError": "lock",
    "Checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "load_model_state": "checkpoint",
    "METRICS": "metrics",
    "MetricsLog": "metrics",
    "StopOnSignal": "signals",
    "TrainingInterrupted": "signals",
    "TrainingDiverged": "divergence",
    "check_loss": "divergence",
    "EpochBar": "progress",
    "EMA": "ema",
    "exit_process": "process",
}

__all__ = [
    "CHECKPOINT",
    "EMA",
    "METRICS",
    "Checkpoint",
    "EpochBar",
    "MetricsLog",
    "RunDirectory",
    "RunLock",
    "RunLockedError",
    "StopOnSignal",
    "TrainingDiverged",
    "TrainingInterrupted",
    "check_loss",
    "exit_process",
    "load_checkpoint",
    "load_model_state",
    "save_checkpoint",
]
assert sorted(__all__) == sorted(_HOME)

__getattr__, __dir__ = lazy_exports("variational.training", _HOME, submodules=("distributed",))
