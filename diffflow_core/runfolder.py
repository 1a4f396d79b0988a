"""Run folders: one run owns a folder at a time, a new run never silently replaces an old one, and a resumed
run is checked before anything in the folder changes.

``diffflow run`` and ``diffflow train`` work inside ``with RunFolder(out, config, resume=..., overwrite=...)``
(see docs/reliability.md, "Run folders and checkpoints"). Entering, in this order:

1. **Ownership.** Takes ``.lock``, created with ``O_EXCL`` and holding the owner's pid, host, command line and
   start time. A folder another live run holds is refused with an error naming that run. A lock whose owner is
   gone (same host, pid no longer running: a run killed by SIGKILL, or by a signal Python does not turn into
   an exception) is stale: it is taken over, with a warning on stderr naming the dead run. Leaving the block
   (normally, on an error or on Ctrl-C) removes the lock. A lock from another host cannot be checked: delete
   it by hand if that run is gone.
2. **Overwrite policy.** A folder that already holds a run (any of :data:`RUN_MARKERS`) is refused unless the
   run resumes it (``--resume``) or replaces it (``--overwrite``, which then deletes the old run's
   :data:`OUTPUTS` so that no file of the old run survives next to the new one).
3. **Resume validation** (:func:`check_resume`): the checkpoint exists, is intact (CRC-checked), holds a
   training state, and was trained with the same config as the one the run continues.
4. **Leftovers.** Temporary files of checkpoint or log writes whose writer is no longer running are removed
   (one line on stderr says which and how large).

Nothing is written before steps 1-3 pass, so a refused command leaves the folder as it found it (a folder it
had to create is removed again if it stays empty). Under ``torchrun`` only rank 0 owns the folder: on the
other ranks ``RunFolder`` does nothing (rank 0's refusal ends the whole launch).
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from diffflow_core.checkpoint import read_checkpoint, temp_files
from diffflow_core.errors import CheckpointError, ConfigError
from diffflow_core.training.distributed import is_main_process

__all__ = ["RunFolder", "check_resume", "LOCK", "RUN_MARKERS", "OUTPUTS", "RESUMABLE"]

LOCK = ".lock"
CHECKPOINT = "checkpoint.pt"
#: Files whose presence means a folder already holds a run.
RUN_MARKERS = ("checkpoint.pt", "metrics.jsonl", "metrics.json", "samples.npy")
#: What run and train write into a run folder (plus ``snapshots/``); ``--overwrite`` deletes them first.
OUTPUTS = ("config.json", "checkpoint.pt", "metrics.jsonl", "metrics.csv", "metrics.json", "samples.npy",
           "samples.png", "trajectory.png", "interpolation.png", "loss.png")
#: ``train`` settings a resumed run may change: how long it runs, where its learning rate decays (``decay``, a
#: fraction of the new ``steps``: a run trained at a constant rate can end in a cool-down) and how it reports,
#: never what it trains.
RESUMABLE = ("steps", "decay", "log_every", "eval_every", "checkpoint_every", "progress", "compile", "channels_last")


class RunFolder:
    """Context manager: own ``path`` for one run (see the module docstring for what entering checks).

    ``config`` is the config dict of the run (``ModelConfig.as_dict()``); with ``resume`` the checkpoint in
    ``path`` must have been trained with it (up to :data:`RESUMABLE` settings). ``resume`` and ``overwrite``
    exclude each other.
    """

    def __init__(self, path: str | os.PathLike, config: dict[str, Any] | None = None, *, resume: bool = False,
                 overwrite: bool = False) -> None:
        if resume and overwrite:
            raise ConfigError("--resume and --overwrite: give one (continue the run in --out, or replace it)")
        self.path, self.config, self.resume, self.overwrite = Path(path), config, resume, overwrite
        self._lock: str | None = None  # the text of our lock file while we hold it
        self._created = False

    def __enter__(self) -> RunFolder:
        if not is_main_process():
            return self
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"--out: {self.path} is a file; expected a run folder (a new or existing directory)")
        self._created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._acquire()
        except OSError as exc:
            self._remove_if_empty()
            raise ConfigError(f"--out: cannot write the run folder {self.path}: {exc.strerror or exc}") from None
        try:
            held = [name for name in RUN_MARKERS if (self.path / name).exists()]
            if self.resume:
                check_resume(self.path, self.config)
            elif held and not self.overwrite:
                raise ConfigError(f"--out: {self.path} already holds a run ({', '.join(held)}); pass --resume to "
                                  "continue it, --overwrite to replace it, or another --out for a new run")
            self._remove_leftovers()
            if self.overwrite:
                for name in OUTPUTS:
                    (self.path / name).unlink(missing_ok=True)
                shutil.rmtree(self.path / "snapshots", ignore_errors=True)
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self._release()

    # -- the lock ------------------------------------------------------------------------------------
    def _acquire(self) -> None:
        lock = self.path / LOCK
        text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": shlex.join(sys.argv),
                           "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        for _ in range(3):  # a stale lock taken over, or one that vanished meanwhile: try again
            try:
                with open(lock, "x") as f:  # O_CREAT | O_EXCL: exactly one process creates it
                    f.write(text)
                self._lock = text
                return
            except FileExistsError:
                pass
            try:
                seen = lock.read_text()
            except FileNotFoundError:
                continue
            holder = _parse_lock(seen)
            if holder is None:
                raise ConfigError(f"--out: {self.path} is locked by {lock}, which names no owner (a run that is "
                                  "starting, or one killed while it started); if no run uses the folder, "
                                  "delete the lock file")
            if not _is_stale(holder):
                raise ConfigError(f"--out: {self.path} is in use by another run ({_describe(holder)}); wait for "
                                  f"it to end or choose another --out (if that run is gone, delete {lock})")
            if lock.read_text() == seen:  # still the dead run's lock (not one a rival just took over)
                lock.unlink(missing_ok=True)
                print(f"diffflow: warning: {self.path}: took over the lock of a run that is no longer running "
                      f"({_describe(holder)})", file=sys.stderr)
        raise ConfigError(f"--out: {self.path} is being claimed by other runs at the same time; choose another --out")

    def _release(self) -> None:
        if self._lock is not None:
            lock = self.path / LOCK
            try:
                if lock.read_text() == self._lock:
                    lock.unlink()
            except FileNotFoundError:
                pass
            self._lock = None
        self._remove_if_empty()

    def _remove_if_empty(self) -> None:
        """A folder this run created and left empty (a refused or failed start) is removed again."""
        if self._created and self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()
            self._created = False

    # -- leftovers -----------------------------------------------------------------------------------
    def _remove_leftovers(self) -> None:
        """Delete the temporary files of writers that are no longer running (this process writes none yet)."""
        stale = [path for path, pid in temp_files(self.path) if pid is None or pid == os.getpid() or not _alive(pid)]
        if not stale:
            return
        size = sum(path.stat().st_size for path in stale)
        for path in stale:
            path.unlink(missing_ok=True)
        print(f"diffflow: warning: {self.path}: removed {len(stale)} temporary file(s) of interrupted writes "
              f"({size / 1e6:.1f} MB): {', '.join(p.name for p in stale)}", file=sys.stderr)


def check_resume(folder: str | os.PathLike, config: dict[str, Any] | None) -> None:
    """Raise (CheckpointError or ConfigError, naming the file) unless ``folder`` holds a checkpoint that a run
    with ``config`` can continue: intact, with a training state, trained with the same config up to the
    :data:`RESUMABLE` train settings (``config`` None: the first three only). Reads, never writes."""
    from diffflow_core.config import ModelConfig

    path = Path(folder) / CHECKPOINT
    if not path.is_file():
        raise ConfigError(f"--resume: {folder} holds no {CHECKPOINT} to continue; drop --resume to start a new "
                          "run there (add --overwrite if it holds an unfinished one)")
    payload = read_checkpoint(path)
    if not isinstance(payload.get("train_state"), dict):
        raise CheckpointError(f"--resume: {path} holds a model but no training state (written by Model.save?)")
    if config is None:
        return
    try:
        trained = ModelConfig.from_dict(payload.get("config") or {}).as_dict()
    except ConfigError as exc:
        raise CheckpointError(f"--resume: {path} records a config this version cannot read: {exc}") from None
    differences = [f"{key} is {was!r} in the checkpoint, {now!r} in the config"
                   for key, was, now in _differences(trained, ModelConfig.from_dict(config).as_dict())
                   if key != "summary" and key.removeprefix("train.") not in RESUMABLE]
    if differences:
        raise CheckpointError(f"--resume: {path} was trained with another config than this run's: "
                              f"{'; '.join(differences[:3])}{'; ...' if len(differences) > 3 else ''} "
                              "(start a new run with another --out, or replace this one with --overwrite)")


def _differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """``(dotted key, value in a, value in b)`` for every leaf where two nested dicts differ."""
    for key in dict.fromkeys([*a, *b]):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            yield from _differences(x, y, f"{prefix}{key}.")
        elif x != y:
            yield f"{prefix}{key}", x, y


def _parse_lock(text: str) -> dict[str, Any] | None:
    try:
        holder = json.loads(text)
    except ValueError:
        return None
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None


def _is_stale(holder: dict[str, Any]) -> bool:
    """Whether a lock's owner is known to be gone: same host and the pid runs no more (a reused pid looks
    alive, so such a lock is kept: the error then says how to delete it)."""
    return holder.get("host") == socket.gethostname() and not _alive(holder["pid"])


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would interrupt the process there; assume it runs
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _describe(holder: dict[str, Any]) -> str:
    return (f"pid {holder['pid']} on {holder.get('host', '?')}, started {holder.get('started', '?')}: "
            f"{holder.get('command', '?')}")
