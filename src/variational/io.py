"""Atomic, pickle-free files: JSON for everything readable, safetensors (with a checksum) for tensors.

A write goes to a temporary file in the same directory, is flushed to disk and then renamed over
the target, so a crash mid-write leaves the previous file intact (and at worst a `.NAME.*.tmp`
file, which `remove_stale_temporaries` clears). JSON is written strictly: NaN and infinities become
null, never the non-standard `NaN` tokens other readers reject.

>>> import tempfile, torch
>>> d = tempfile.mkdtemp()
>>> _ = save_tensors(f"{d}/w.safetensors", {"w": torch.ones(2)}, metadata={"note": "hi"})
>>> load_tensors(f"{d}/w.safetensors")["w"].tolist(), read_metadata(f"{d}/w.safetensors")["note"]
([1.0, 1.0], 'hi')
>>> dumps_json({"elbo": float("nan")})
'{"elbo": null}'
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from variational.errors import CheckpointError, OutputError

__all__ = [
    "atomic_write",
    "dumps_json",
    "load_json",
    "load_tensors",
    "read_metadata",
    "remove_stale_temporaries",
    "require_finite",
    "save_json",
    "save_tensors",
]

# The metadata key of the checksum over the tensor bytes and every other metadata entry. Files
# written before the metadata was covered carry "sha256" (tensor bytes only) and are still read.
CHECKSUM = "checksum"
_LEGACY_CHECKSUM = "sha256"
TEMP_SUFFIX = ".tmp"


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call `write(tmp_path)`, then move the temporary file onto `path` in one rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    os.close(fd)
    try:
        write(tmp)
        _fault_point("write")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        _fault_point("rename")
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # make the rename itself durable
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, OutputError):  # disk full, permissions
            raise OutputError(f"cannot write {path}: {e.strerror or e}") from e
        raise
    return path


def _fault_point(where: str) -> None:
    """Fault injection for tests/test_faults.py: VARIATIONAL_FAULT=write:N kills this process with
    SIGKILL at the N-th (1-based) atomic write, after the data is written and before the rename."""
    spec = os.environ.get("VARIATIONAL_FAULT")
    if not spec:
        return
    point, _, count = spec.partition(":")
    if point != where:
        return
    _FAULT_COUNT[where] = _FAULT_COUNT.get(where, 0) + 1
    if _FAULT_COUNT[where] == int(count or 1):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


_FAULT_COUNT: dict[str, int] = {}


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files an interrupted `atomic_write` left in `directory`; returns them.

    Call it only while holding the directory's lock (`variational.training.RunLock`): another
    writer's temporary file is not stale.
    """
    removed = []
    for p in Path(directory).glob(f".*{TEMP_SUFFIX}"):
        if p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _finite_or_none(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    return obj


def dumps_json(obj: Any, **kwargs: Any) -> str:
    """Strict JSON: a non-finite float becomes null (a reader of `NaN` tokens would fail or guess)."""
    return json.dumps(_finite_or_none(obj), allow_nan=False, **kwargs)


def save_json(path: str | os.PathLike, obj: Any) -> Path:
    text = dumps_json(obj, indent=2, sort_keys=True) + "\n"

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    return atomic_write(path, write)


def load_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None


def save_tensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    """Write tensors and string metadata with one SHA-256 over both, so `load_tensors` detects damage and edits."""
    from safetensors.torch import save_file

    # safetensors refuses shared or non-contiguous storage: hand it contiguous CPU copies.
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    meta = {k: v for k, v in (metadata or {}).items() if k not in (CHECKSUM, _LEGACY_CHECKSUM)}
    meta[CHECKSUM] = _digest(flat, meta)
    return atomic_write(path, lambda tmp: save_file(flat, tmp, metadata=meta))


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file (not checked against the checksum: `load_tensors` does that)."""
    from safetensors import safe_open

    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # noqa: BLE001  (safetensors raises several types for a damaged file)
        raise CheckpointError(f"{path}: not a readable safetensors file ({_first_line(e)})") from None


def load_tensors(path: str | os.PathLike, device: Any = "cpu") -> dict:
    """The tensors of a file written by `save_tensors`, verified against its checksum."""
    from safetensors.torch import load_file

    path = _existing(path)
    meta = read_metadata(path)
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as e:  # noqa: BLE001  (safetensors raises several types for a damaged file)
        raise CheckpointError(f"{path}: not a readable safetensors file ({_first_line(e)})") from None
    if CHECKSUM in meta:
        expected, actual = meta[CHECKSUM], _digest(tensors, {k: v for k, v in meta.items() if k != CHECKSUM})
    elif _LEGACY_CHECKSUM in meta:
        expected, actual = meta[_LEGACY_CHECKSUM], _digest(tensors)
    else:
        raise CheckpointError(f"{path}: no checksum in its metadata: not a file written by variational")
    if expected != actual:
        raise CheckpointError(
            f"{path}: the data or metadata does not match its checksum: the file is damaged or was edited"
        )
    return {k: v.to(device) for k, v in tensors.items()}


def require_finite(tensors: dict, path: str | os.PathLike, what: str = "tensor") -> None:
    """A CheckpointError naming the first floating-point tensor that holds a NaN or an infinity."""
    import torch

    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(
                f"{path}: {what} {name!r} holds {bad} non-finite value(s) (NaN or infinity); "
                "the file cannot give a trustworthy model"
            )


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    return path


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _digest(tensors: dict, metadata: dict[str, str] | None = None) -> str:
    import torch

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    if metadata is not None:
        h.update(json.dumps(metadata, sort_keys=True).encode())
    return h.hexdigest()
