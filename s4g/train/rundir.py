"""A run folder's safety: one training process at a time, no finished run started over by
mistake, no temporary file left behind by a killed write.

`claim_run_dir(out, ...)` holds the folder's lock file (`.s4g-train.lock`, naming the owner's
pid and host) for the whole run. The lock is an flock(2) on that file, which the kernel drops
when its process ends however it ends, so a lock left by a killed run is recognised as stale
and taken over with a note. A folder that already holds a run (config.json, metrics.jsonl,
last.pt or best.pt) is only continued with --resume, or started over with --overwrite, which
moves the earlier files into `replaced-<time>/` instead of deleting them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console

from s4g.errors import UserInputError
from s4g.fileio import remove_stale_temporaries

try:
    import fcntl
except ImportError:  # not a POSIX system: runs go unlocked (said once, at the start)
    fcntl = None

LOCK_NAME = ".s4g-train.lock"
RUN_FILES = ("config.json", "metrics.jsonl", "last.pt", "best.pt")
REPLACED_PREFIX = "replaced-"
# A lock's owner writes its name right after taking it; a reader that finds the file still
# empty waits this long for it.
_OWNER_WAIT_S = 2.0


def describe_owner(text: str) -> str:
    """A lock file's content as words: "process PID on HOST since TIME (COMMAND)"."""
    try:
        owner = json.loads(text)
        words = f"process {owner['pid']} on {owner['host']} since {owner['started']}"
        return words + (f" ({owner['command']})" if owner.get("command") else "")
    except (ValueError, KeyError, TypeError):
        return f"an unknown process (the lock file holds {text[:80]!r})"


def _owner_record() -> str:
    command = " ".join(["s4g", *sys.argv[1:]])[:300]
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                       "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": command}) + "\n"


def _read(fd: int) -> str:
    return os.pread(fd, 1 << 16, 0).decode("utf-8", "replace").strip()


def _lock(folder: Path, console: Console) -> int | None:
    """Take the folder's lock; its file descriptor (None where the system has no locks)."""
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read(fd)
            deadline = time.monotonic() + _OWNER_WAIT_S
            while not owner and time.monotonic() < deadline:
                time.sleep(0.05)
                owner = _read(fd)
            os.close(fd)
            raise UserInputError(
                f"--out {folder} is in use: another s4g train writes into it, {describe_owner(owner)}; "
                "wait for it to end, or choose another --out"
            ) from None
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            console.print(f"[yellow]note:[/] the file system of {folder} cannot lock files; make sure no other "
                          "s4g train writes into it", soft_wrap=True)
            return None
        try:  # the owner before us may have removed the file between our open and our flock
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)
    earlier = _read(fd)
    if earlier:  # a lock file nobody holds: its run was killed before it could remove it
        console.print(f"[yellow]note:[/] took over the lock {path} left by {describe_owner(earlier)}, which "
                      "is no longer running", soft_wrap=True)
    os.ftruncate(fd, 0)
    os.pwrite(fd, _owner_record().encode(), 0)
    return fd


def _unlock(folder: Path, fd: int | None) -> None:
    if fd is None:
        return
    try:
        os.unlink(folder / LOCK_NAME)  # while still held: a waiting opener then sees a new file
    finally:
        os.close(fd)


def _move_aside(folder: Path, console: Console) -> None:
    """Move everything in `folder` but the lock and earlier replaced-* folders into a new
    replaced-<time>/ folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest, n = folder / f"{REPLACED_PREFIX}{stamp}", 1
    while dest.exists():
        n += 1
        dest = folder / f"{REPLACED_PREFIX}{stamp}-{n}"
    entries = [p for p in folder.iterdir() if p.name != LOCK_NAME and not p.name.startswith(REPLACED_PREFIX)]
    dest.mkdir()
    for entry in entries:
        os.replace(entry, dest / entry.name)
    console.print(f"--overwrite: moved the earlier run's {len(entries)} files to {dest}", soft_wrap=True)


def _check_contents(folder: Path, resume_from: Path | None, overwrite: bool, console: Console) -> None:
    found = [name for name in RUN_FILES if (folder / name).exists()]
    if resume_from is not None and resume_from.parent == folder:
        if overwrite:
            raise UserInputError(f"--overwrite would move aside the run that --resume continues ({folder}); "
                                 "give one of the two")
        last = folder / "last.pt"
        if last.exists() and not last.samefile(resume_from):
            # the run would replace last.pt and cut metrics.jsonl back to the older checkpoint's epoch
            raise UserInputError(
                f"--resume {resume_from}: its run folder holds a newer last.pt, which continuing here would "
                f"replace; resume the run itself (--resume {folder}), or continue from {resume_from.name} "
                "into a new --out"
            )
        return
    if found and not overwrite:
        raise UserInputError(
            f"--out {folder} already holds a training run ({', '.join(found)}); continue it with "
            f"--resume {folder}, choose another --out, or pass --overwrite to start a new run there "
            f"(the earlier files are moved into {folder}/{REPLACED_PREFIX}<time>/, not deleted)"
        )
    if found:
        _move_aside(folder, console)


@contextlib.contextmanager
def claim_run_dir(
    out: str | os.PathLike, *, resume_from: str | os.PathLike | None, overwrite: bool, console: Console
) -> Iterator[Path]:
    """Hold the run folder `out` for one training process; yields it as an absolute path.

    resume_from: the checkpoint file the run continues from (None for a new run); a run may
    continue in the folder of that checkpoint. overwrite: start a new run in a folder that
    holds one, moving its files aside. Temporary files that a killed write left are removed.
    UserInputError when the folder is locked by a live process or holds a run that neither
    option allows writing over. A folder that was empty or new is removed again when the run
    ends without writing anything.
    """
    folder = Path(out).expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise UserInputError(f"--out {folder} is a file; give a run folder (new, or a run to --resume)")
    folder.mkdir(parents=True, exist_ok=True)
    was_empty = not any(folder.iterdir())
    if fcntl is None:
        console.print(f"[yellow]note:[/] this system cannot lock {folder}; make sure no other s4g train writes "
                      "into it", soft_wrap=True)
    fd = None if fcntl is None else _lock(folder, console)
    try:
        _check_contents(folder, None if resume_from is None else Path(resume_from).resolve(), overwrite, console)
        removed = remove_stale_temporaries(folder)
        if removed:
            console.print(f"removed {len(removed)} temporary file(s) that an interrupted write left in {folder}: "
                          + ", ".join(removed), soft_wrap=True)
        yield folder
    finally:
        _unlock(folder, fd)
        if was_empty and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


__all__ = ["LOCK_NAME", "REPLACED_PREFIX", "RUN_FILES", "claim_run_dir", "describe_owner"]
