"""One run per workdir: `WORKDIR/run.lock` holds {host, pid, started} as JSON while a run writes there.

Created with O_CREAT|O_EXCL (atomic), so of two runs started together exactly one gets it. A lock
whose pid is gone on this host is stale and taken over with a one-line notice; a lock from another
host cannot be checked and stops the run (delete the file if that run is known to be gone).
Multi-host runs: only process 0 takes it (the caller decides).
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

LOCK_NAME = "run.lock"
_UNWRITTEN_GRACE_S = 10.0  # an empty/unparsable lock younger than this may be being written


class WorkdirLocked(RuntimeError):
    """Another live run holds the workdir's lock; the message names the holder."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _describe(info: dict[str, Any]) -> str:
    return (f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, started {info.get('started', '?')}"
            + (f": {info['command']}" if info.get("command") else ""))


class WorkdirLock:
    """Context manager: `with WorkdirLock(workdir): run(...)`; released on exit, also on exceptions."""

    def __init__(self, workdir: str | os.PathLike, notice=None):
        # A remote workdir (gs://...) has no O_EXCL create: no lock there (the run says nothing).
        self.remote = "://" in str(workdir)
        self.path = Path(workdir) / LOCK_NAME
        self.held = False
        self._notice = notice or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.info = {"host": socket.gethostname(), "pid": os.getpid(),
                     "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                     "command": " ".join(sys.argv)[:300]}

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(self.info, f)
        return True

    def _read(self) -> dict[str, Any] | None:
        try:
            info = json.loads(self.path.read_text())
            return info if isinstance(info, dict) else None
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return None

    def _stale(self, info: dict[str, Any] | None) -> bool:
        if info is None:  # unparsable: stale once it is old enough not to be mid-write
            try:
                return time.time() - self.path.stat().st_mtime > _UNWRITTEN_GRACE_S
            except FileNotFoundError:
                return True
        if info.get("host") != self.info["host"]:
            return False
        pid = info.get("pid")
        return isinstance(pid, int) and pid != os.getpid() and not _pid_alive(pid)

    def acquire(self) -> "WorkdirLock":
        if self.remote:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._create():
                self.held = True
                return self
            info = self._read()
            if info == {}:  # released between our attempt and the read
                continue
            if not self._stale(info):
                raise WorkdirLocked(
                    f"workdir {self.path.parent} is in use by {_describe(info or {})} "
                    f"(lock {self.path}; delete it if that run is gone)")
            # Take the stale lock over: rename it away first so two takers cannot both remove a
            # fresh lock; then retry the exclusive create.
            aside = self.path.with_name(f"{LOCK_NAME}.stale-{os.getpid()}")
            try:
                os.replace(self.path, aside)
            except FileNotFoundError:
                continue
            try:
                moved = json.loads(aside.read_text())
            except (OSError, ValueError):
                moved = None
            if moved != info:  # another taker won meanwhile and this is its fresh lock: put it back
                try:
                    os.link(aside, self.path)  # fails rather than clobbers if a lock exists again
                except OSError:
                    pass
                aside.unlink(missing_ok=True)
                continue
            aside.unlink(missing_ok=True)
            self._notice(f"note: taking over the stale lock of {_describe(info or {})} in {self.path.parent}")
        raise WorkdirLocked(f"could not take the lock {self.path}: it keeps changing hands")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        info = self._read()
        if info and info.get("pid") == self.info["pid"] and info.get("host") == self.info["host"]:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "WorkdirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
