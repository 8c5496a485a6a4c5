"""A run folder's safety: one training process at a time, no finished run started over by
mistake, no folder moved that is not a run, no temporary file left behind by a killed write.

`claim_run_dir(out, ...)` holds the folder's lock file (`.s4g-train.lock`, naming the owner's
pid and host) for the whole run, with `filelock` (an flock on POSIX, a locked byte on
Windows), which the system drops when its process ends however it ends: a lock left by a
killed run is taken over with a note. A folder that holds an s4g run (config.json written by
s4g train, or an s4g checkpoint) is only continued with --resume, or started over with
--overwrite, which moves the earlier files into `replaced-<time>/` instead of deleting them.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import filelock
from rich.console import Console

from s4g.errors import UserInputError
from s4g.fileio import json_kind, remove_stale_temporaries
from s4g.flags import Flag

LOCK_NAME = ".s4g-train.lock"
RUN_FILES = ("config.json", "metrics.jsonl", "last.pt", "best.pt")
REPLACED_PREFIX = "replaced-"
# The owner writes its name right after taking the lock; a refused process waits this long
# for it to appear.
_OWNER_WAIT_S = 2.0
_RUN_CONFIG = json_kind("the config.json of an s4g run")  # s4g train marks it


def describe_owner(text: str) -> str:
    """A lock file's content as words: "process PID on HOST since TIME (COMMAND)"."""
    try:
        owner = json.loads(text)
        words = f"process {owner['pid']} on {owner['host']} since {owner['started']}"
        return words + (f" ({owner['command']})" if owner.get("command") else "")
    except (ValueError, KeyError, TypeError):
        return f"an unknown process (the lock file holds {text[:80]!r})"


def _lock(folder: Path, console: Console) -> filelock.FileLock:
    """The folder's lock, taken; UserInputError naming the owner when a live process holds it."""
    path = folder / LOCK_NAME
    earlier: list[str] = []

    def write_owner(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        earlier.append(os.read(fd, 1 << 16).decode("utf-8", "replace").strip())
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "command": " ".join(["s4g", *sys.argv[1:]])[:300]}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record) + "\n").encode())

    lock = filelock.FileLock(path, timeout=0, on_acquired=write_owner)
    try:
        lock.acquire()
    except filelock.Timeout:
        deadline = time.monotonic() + _OWNER_WAIT_S
        while not (owner := path.read_text(errors="replace").strip()) and time.monotonic() < deadline:
            time.sleep(0.05)
        raise UserInputError(
            f"{Flag.OUT} {folder} is in use: another s4g train writes into it, {describe_owner(owner)}; "
            f"wait for it to end, or choose another {Flag.OUT}"
        ) from None
    if earlier and earlier[0]:  # a lock file nobody held: its run was killed before it could remove it
        console.print(f"[yellow]note:[/] took over the lock {path} left by {describe_owner(earlier[0])}, which "
                      "is no longer running", soft_wrap=True)
    return lock


def is_run(folder: Path) -> bool:
    """Whether `folder` holds an s4g training run: a config.json that s4g train wrote (it
    carries s4g's mark), or an s4g checkpoint as last.pt or best.pt."""
    from s4g.model.checkpoint import CHECKPOINT_FILE

    return any(kind.matches(folder / name) for kind, name in
               ((_RUN_CONFIG, "config.json"), (CHECKPOINT_FILE, "last.pt"), (CHECKPOINT_FILE, "best.pt")))


def _check_contents(folder: Path, resume_from: Path | None, overwrite: bool, console: Console) -> None:
    found = [name for name in RUN_FILES if (folder / name).exists()]
    if resume_from is not None and resume_from.parent == folder:
        if overwrite:
            raise UserInputError(f"{Flag.OVERWRITE} would move aside the run that {Flag.RESUME} continues ({folder}); "
                                 "give one of the two")
        last = folder / "last.pt"
        if last.exists() and not last.samefile(resume_from):
            # the run would replace last.pt and cut metrics.jsonl back to the older checkpoint's epoch
            raise UserInputError(
                f"{Flag.RESUME} {resume_from}: its run folder holds a newer last.pt, which continuing here would "
                f"replace; resume the run itself ({Flag.RESUME} {folder}), or continue from {resume_from.name} "
                f"into a new {Flag.OUT}"
            )
        return
    if not found:
        return
    if not is_run(folder):
        raise UserInputError(
            f"{Flag.OUT} {folder} holds {', '.join(found)}, but no run of s4g train (no s4g checkpoint, no config.json "
            "that s4g train wrote); s4g moves only its own runs aside (not this folder, not even with "
            f"{Flag.OVERWRITE}): choose another {Flag.OUT}"
        )
    if not overwrite:
        raise UserInputError(
            f"{Flag.OUT} {folder} already holds a training run ({', '.join(found)}); continue it with "
            f"{Flag.RESUME} {folder}, choose another {Flag.OUT}, or pass {Flag.OVERWRITE} to start a new run there "
            f"(the earlier files are moved into {folder}/{REPLACED_PREFIX}<time>/, not deleted)"
        )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest, n = folder / f"{REPLACED_PREFIX}{stamp}", 1
    while dest.exists():
        n += 1
        dest = folder / f"{REPLACED_PREFIX}{stamp}-{n}"
    entries = [p for p in folder.iterdir() if p.name != LOCK_NAME and not p.name.startswith(REPLACED_PREFIX)]
    dest.mkdir()
    for entry in entries:
        os.replace(entry, dest / entry.name)
    console.print(f"{Flag.OVERWRITE}: moved the earlier run's {len(entries)} files to {dest}", soft_wrap=True)


@contextlib.contextmanager
def claim_run_dir(
    out: str | os.PathLike, *, resume_from: str | os.PathLike | None, overwrite: bool, console: Console,
    data_root: str | os.PathLike | None = None,
) -> Iterator[Path]:
    """Hold the run folder `out` for one training process; yields it as an absolute path.

    resume_from: the checkpoint file the run continues from (None for a new run); a run may
    continue in the folder of that checkpoint. overwrite: start a new run in a folder that
    holds one, moving its files aside. data_root: the run's dataset folder, which `out` may
    neither be nor hold. Temporary files that a killed write left are removed.
    UserInputError when the folder is locked by a live process, is or holds the data root, or
    holds a run that neither option allows writing over. A folder that was empty or new is
    removed again when the run ends without writing anything.
    """
    folder = Path(out).expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise UserInputError(f"{Flag.OUT} {folder} is a file; give a run folder (new, or a run to {Flag.RESUME})")
    root = None if data_root is None else Path(data_root).expanduser().resolve()
    if root is not None and (folder == root or folder in root.parents):
        raise UserInputError(f"{Flag.OUT} {folder} {'is' if folder == root else 'holds'} the data root {root}; a run "
                             f"folder is never a dataset's folder (nothing there is moved): choose another {Flag.OUT}")
    folder.mkdir(parents=True, exist_ok=True)
    was_empty = not any(folder.iterdir())
    lock = _lock(folder, console)
    try:
        _check_contents(folder, None if resume_from is None else Path(resume_from).resolve(), overwrite, console)
        removed = remove_stale_temporaries(folder)
        if removed:
            console.print(f"removed {len(removed)} temporary file(s) that an interrupted write left in {folder}: "
                          + ", ".join(removed), soft_wrap=True)
        yield folder
    finally:
        try:
            os.unlink(folder / LOCK_NAME)  # while still held: a waiting opener then sees a new file
        finally:
            lock.release()
        if was_empty and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


__all__ = ["LOCK_NAME", "REPLACED_PREFIX", "RUN_FILES", "claim_run_dir", "describe_owner", "is_run"]
