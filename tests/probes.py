"""Helpers of the safety tests: the bytes of a folder before and after a probe, the one error
paragraph a refused command prints, a tiny training world's options, a disk that fills up."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

# A world small enough for seconds-long runs on a shared 2-core machine (as in test_train).
TINY_ARGS = ["--locations", "60", "--aerial-size", "32", "--ground-size", "32", "64",
             "--batch-size", "8", "--eval-batch-size", "32", "--log-every", "2", "--workers", "0",
             "--device", "cpu"]
# Runs `s4g` in a fresh interpreter; argv after "-c CODE" becomes the command line.
CLI = "import sys; from s4g.app.cli import main; sys.argv[0] = 's4g'; main()"


def snapshot(*roots: Path) -> dict[str, bytes]:
    """{path: bytes} of every file under `roots` (files or folders)."""
    found = {}
    for root in roots:
        paths = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        found.update({str(p): p.read_bytes() for p in paths})
    return found


def assert_unchanged(before: dict[str, bytes]) -> None:
    """Every file of a snapshot still exists with the same bytes."""
    for path, data in before.items():
        assert Path(path).is_file(), f"{path} disappeared"
        assert Path(path).read_bytes() == data, f"{path} changed"


def temporaries(folder: Path) -> list[str]:
    """Hidden temporary files of s4g.fileio.atomic_path left in `folder`."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and ".tmp" in p.name)


def error_paragraph(result) -> str:
    """The one `error:` paragraph of a command that exited with code 2 (no traceback)."""
    assert result.exit_code == 2, result.output
    return paragraph_of(result.output)


def paragraph_of(output: str) -> str:
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == lines[-1], output
    return errors[0]


def squash(text: str) -> str:
    """`text` without whitespace: console lines may wrap anywhere."""
    return "".join(text.split())


def cli_subprocess_args(*args: str, prelude: str = "") -> list[str]:
    """argv of a fresh `s4g` process, with `prelude` (Python) run before the command. Run it with
    `cwd` outside the checkout: `python -c` puts the working directory first on `sys.path`, and the
    checkout's `s4g/` lacks the compiled `_sampler` of a non-editable install."""
    return [sys.executable, "-c", prelude + "\n" + CLI, *args]


def child_env() -> dict[str, str]:
    """The environment of a child s4g process: this one's, with stderr unbuffered."""
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


class FullDisk:
    """A binary file that takes `room` bytes, then fails as a full disk does."""

    def __init__(self, path, room: int) -> None:
        self.fh, self.room = open(path, "wb"), room  # closed by __exit__

    def write(self, data) -> int:
        if len(data) > self.room:
            self.fh.write(bytes(data)[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.fh.write(data)

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()
