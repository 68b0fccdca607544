"""Run directories that a user can trust: an exclusive lock per run, atomic file writes, checksums, and a
fresh output directory per evaluation.

The lock is ``<run-dir>/.lock``, held with ``flock`` for as long as the writer lives: the kernel releases it
when the process exits in any way (``kill -9`` included), so a lock never outlives its holder on a local file
system. The file also records who holds it (PID, host, command, start time); that record names the holder in
the error a second writer gets, and a record left by a process that is gone is reported as stale when the
lock is taken over.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

LOCK_NAME = ".lock"


class RunLockedError(RuntimeError):
    """Another live process holds the run directory."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_holder(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 65536).decode(errors="replace").strip()
        return json.loads(text) if text else {}
    except (OSError, ValueError):
        return {}


def describe_holder(holder: dict) -> str:
    if not holder:
        return "another process (it left no record)"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"`{holder.get('command', '?')}` (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since {since})"


class RunLock:
    """Exclusive lock of one run directory; a context manager. ``purpose`` names the holder's job in errors."""

    def __init__(self, run_dir: str | Path, purpose: str = "steerlab"):
        self.run_dir = Path(run_dir)
        self.purpose = purpose
        self.fd: int | None = None
        self.stale: dict | None = None

    def acquire(self) -> "RunLock":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunLockedError(f"cannot lock {path}: {e} (the file system may not support locks)") from e
            raise RunLockedError(
                f"{self.run_dir} is in use by {describe_holder(holder)}; wait for it to finish, or pass another "
                f"--run-name"
            ) from None
        old = _read_holder(fd)
        if old and (old.get("host") != socket.gethostname() or not _pid_alive(int(old.get("pid", -1)))):
            self.stale = old  # its holder died without releasing; the kernel already dropped its flock
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                  "command": self.purpose or " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)
        except OSError:
            pass
        os.close(self.fd)  # closing drops the flock
        self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``path`` through a temporary file in the same directory and ``os.replace``: a reader (or a killed
    writer) sees the old file or the new one, never a part."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str))


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def new_eval_dir(run_dir: str | Path, label: str) -> Path:
    """A new directory ``<run-dir>/evals/<NNN>-<label>`` (numbered after the existing ones; never reused)."""
    root = Path(run_dir) / "evals"
    root.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name.split("-", 1)[0]) for p in root.iterdir() if p.name.split("-", 1)[0].isdigit()]
    n = max(taken, default=0) + 1
    while True:
        d = root / f"{n:03d}-{label}"
        try:
            d.mkdir()
            return d
        except FileExistsError:
            n += 1


class staged_output:
    """Context manager for a results directory written all at once: yields a temporary sibling directory, which
    replaces ``out`` when the block succeeds and is removed when it fails, so a failed run never leaves an empty
    or half-written ``out`` (and an earlier result there survives a failure)."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.tmp = self.out.with_name(f".{self.out.name}.tmp-{os.getpid()}")

    def __enter__(self) -> Path:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir()
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        old = self.out.with_name(f".{self.out.name}.old-{os.getpid()}")
        if self.out.exists():
            os.replace(self.out, old)
        os.replace(self.tmp, self.out)
        shutil.rmtree(old, ignore_errors=True)
