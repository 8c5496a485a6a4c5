"""The file edge: atomic output files, checks that an output loses no one's file, file hashes.
(Weights and checkpoints are read by s4g.model.weightfile.)

Every s4g output goes through `atomic_path` (temporary name in the target's folder, flushed
to disk, renamed), so a crash, a full disk or a kill leaves the previous version intact; a
failed write is an OSError naming the target file and the cause. Every command checks its
output paths with `check_output` before it starts its work.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import itertools
import json
import os
import re
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any, NamedTuple, cast

import numpy as np

from s4g.errors import UserInputError
from s4g.flags import Flag

# What a failed write's message suggests, by errno.
_ADVICE = {errno.ENOSPC: "; free some space", errno.EDQUOT: "; free some space",
           errno.EACCES: "; check the folder's permissions", errno.EPERM: "; check the folder's permissions",
           errno.EROFS: "; write somewhere else"}
# mkstemp's names: "." + target name + "." + 8 characters + ".tmp" + an optional extension.
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "", *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it onto `path`.

    A crash or exception leaves any previous file at `path` untouched and removes the
    temporary file. `suffix` keeps extensions that writers insist on (np.savez adds ".npz").
    durable: flush the file (and the rename) to the disk before returning, so a power cut
    cannot leave an empty file behind; off only for bulk files that can be made again.
    An OSError of the system while writing (one with an errno: disk full, I/O error, no
    permission, a folder that takes no new file) is raised again naming `path`, never the
    temporary file, and saying that the previous version is kept; others pass unchanged. A
    part of the folder's path that is a file is a NotADirectoryError naming that part.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (path.parent, *path.parents) if p.exists() and not p.is_dir()), path.parent)
        raise NotADirectoryError(errno.ENOTDIR, "is a file, not a folder, so nothing can be written into "
                                 f"{path.parent}", str(blocker)) from None
    tmp_path = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        umask = os.umask(0)  # mkstemp makes the file private (0600): give it the mode open() would
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        yield tmp_path
        if durable:
            _fsync(tmp_path)
        os.replace(tmp_path, path)
        if durable:
            with contextlib.suppress(OSError):  # a folder that the system cannot open or sync (Windows)
                _fsync(path.parent)
    except OSError as err:
        # Without an errno it is a writer's own complaint (PIL's "cannot write mode RGBA as
        # JPEG"): a bug in s4g, which keeps its type, message and traceback. One about another
        # file (an input read inside the block) stays as it is too.
        named = None if err.filename is None else os.fsdecode(err.filename)
        if err.errno is None or (tmp_path is not None and named not in (None, str(tmp_path), str(path),
                                                                        str(path.parent))):
            raise
        raise OSError(err.errno, f"could not be written: {err.strerror or os.strerror(err.errno)} "
                      f"({errno.errorcode.get(err.errno, err.errno)}); any previous version of the file is unchanged"
                      + _ADVICE.get(err.errno, ""), str(path)) from err
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def _fsync(path: Path) -> None:
    """Flush a file, or a folder's renames, to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: The mark of a file s4g wrote: a member of an .npz, a key of a JSON object, a PNG text
#: chunk, the creator of a PDF or SVG figure. `--overwrite` replaces only a file that carries
#: it, so an image, table or document of the same format that s4g did not write is never lost.
MARK = "s4g_output"
_MARK_TEXT = "written by s4g"


def marked(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` with s4g's mark (for a JSON output that check_output may later replace)."""
    return {**obj, MARK: _MARK_TEXT}


def png_mark() -> Any:
    """Pillow's PngInfo carrying s4g's mark (image.save(..., pnginfo=png_mark()))."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(MARK, _MARK_TEXT)
    return info


def figure_mark(fmt: str) -> dict[str, str]:
    """matplotlib's savefig(metadata=...) carrying s4g's mark in format `fmt` (png, pdf, svg)."""
    return {MARK: _MARK_TEXT} if fmt == "png" else {"Creator": f"{MARK}: {_MARK_TEXT}"}


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """np.savez to `path` atomically, with s4g's mark as one more member."""
    with atomic_path(path, suffix=".npz") as tmp:
        members: dict[str, Any] = {**arrays, MARK: np.array(_MARK_TEXT)}
        np.savez(tmp, **members)


def save_json(path: str | os.PathLike, obj: object) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    """torch.save(obj) to `path` atomically; a failed write is an OSError naming `path`."""
    import torch  # on use: this module also serves the CLI's light path (s4g --help) and s4g synth

    failed: list[OSError] = []

    def write(data) -> int:  # torch.save turns a failed write's OSError into a RuntimeError without the errno
        try:
            return fh.write(data)
        except OSError as err:
            failed.append(err)
            raise

    # A Python file object, not the path: torch's C++ writer cannot take a path that is not UTF-8.
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        try:  # torch's writer calls only write and flush
            torch.save(obj, cast("IO[bytes]", SimpleNamespace(write=write, flush=fh.flush)))
        except RuntimeError:
            if failed:
                raise failed[0] from None
            raise


def read_json_lines(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a JSON-lines file such as a run's metrics.jsonl (one JSON object a line;
    blank lines skipped). UserInputError naming the file and line for a line that is not a
    JSON object."""
    records = []
    for n, line in enumerate(Path(path).read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as err:  # JSONDecodeError, or bytes that are not UTF-8
            raise UserInputError(f"{path}, line {n}: not JSON ({err})") from None
        if not isinstance(record, dict):
            raise UserInputError(f"{path}, line {n}: not a JSON object")
        records.append(record)
    return records


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (streamed in 4 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file (after links, hard links included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


class OutputKind(NamedTuple):
    """A kind of file an s4g command writes: its name in messages, with its article ("an s4g
    index"), and `test(path)`: whether s4g wrote the file as this kind (from its headers and
    s4g's mark; only a JSON kind reads a whole file, one that starts as a JSON object)."""

    description: str
    test: Callable[[Path], bool]

    def matches(self, path: Path) -> bool:
        """`test(path)`; false for a file it cannot open or parse, which is then never replaced."""
        try:
            return self.test(path)
        except (OSError, ValueError, zipfile.BadZipFile, csv.Error):  # UnicodeDecodeError is a ValueError
            return False


def npz_kind(description: str, *arrays: str) -> OutputKind:
    """An .npz output recognised by the names of its arrays and s4g's mark (save_npz)."""

    def test(path: Path) -> bool:
        with zipfile.ZipFile(path) as zf:
            return {f"{a}.npy" for a in (*arrays, MARK)} <= set(zf.namelist())

    return OutputKind(description, test)


def json_kind(description: str, *keys: str) -> OutputKind:
    """A JSON-object output recognised by its keys and s4g's mark (`marked`)."""

    def test(path: Path) -> bool:
        with open(path, encoding="utf-8-sig") as fh:
            # A checkpoint or an image given as --json is told apart without reading it all.
            if fh.read(4096).lstrip()[:1] != "{":
                return False
            fh.seek(0)
            obj = json.load(fh)
        return isinstance(obj, dict) and {*keys, MARK} <= obj.keys()

    return OutputKind(description, test)


def csv_kind(description: str, is_header: Callable[[list[str]], bool]) -> OutputKind:
    """A CSV output recognised by its header line, s4g's mark there (a CSV has no other place
    every reader skips): `is_header(names)` is true only for the exact header s4g writes."""

    def test(path: Path) -> bool:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            return is_header(next(csv.reader(fh), []))

    return OutputKind(description, test)


def _marked_file(*signatures: bytes) -> Callable[[Path], bool]:
    """A binary file starting with one of `signatures` and holding s4g's mark near its start
    (PNG text chunks, SVG metadata) or its end (a PDF's document information)."""

    def test(path: Path) -> bool:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - (1 << 16)))
            tail = fh.read()
        return head.lstrip().startswith(signatures) and MARK.encode() in head + tail

    return test


PNG_IMAGE = OutputKind("a PNG image written by s4g", _marked_file(b"\x89PNG\r\n\x1a\n"))
#: What matplotlib writes for s4g plot: PNG, PDF or SVG (an XML text).
FIGURE = OutputKind("a PNG, PDF or SVG figure written by s4g",
                    _marked_file(b"\x89PNG\r\n\x1a\n", b"%PDF", b"<?xml", b"<svg"))


def check_output(path: str | os.PathLike, kind: OutputKind, *, option: str, overwrite: bool,
                 inputs: Iterable[tuple[str, str | os.PathLike | None]] = ()) -> Path:
    """`path` if a command may write its `kind` of output there; UserInputError otherwise.

    Refused: one of the command's `inputs` ((option as spelled, path) pairs: a file, the same
    after links, or a folder such as a data root, and then anything inside it), a folder, an
    existing file that s4g did not write as this kind (never replaced, even with --overwrite),
    and an existing output of this kind unless `overwrite`. option: how the output's option is
    spelled (e.g. "--out"). Called before the command's work starts.
    """
    path = Path(path)
    for name, source in inputs:
        if source is not None and Path(source).is_dir() and Path(source).resolve() in path.resolve().parents:
            raise UserInputError(f"{option} {path} lies inside this command's input folder ({name} {source}); "
                                 "s4g writes nothing there: write the output somewhere else")
        if source is not None and Path(source).exists() and same_file(path, source):
            raise UserInputError(f"{option} {path} is this command's input ({name} {source}); write the output "
                                 "to another file")
    if path.is_dir():
        raise UserInputError(f"{option} {path} is a folder; give the name of the file to write ({kind.description})")
    if path.exists() and (not path.is_file() or not kind.matches(path)):
        raise UserInputError(f"{option} {path} already exists and is not {kind.description}; s4g replaces only "
                             f"its own outputs (not this file, not even with {Flag.OVERWRITE}): choose another name")
    if path.exists() and not overwrite:
        raise UserInputError(f"{option} {path} already exists ({kind.description}); pass {Flag.OVERWRITE} to replace "
                             "it, or choose another name")
    return path


def check_distinct_outputs(outputs: Iterable[tuple[str, str | os.PathLike | None]]) -> None:
    """UserInputError when two of one command's outputs ((option as spelled, path) pairs; None
    for one not asked for) are the same file: the later write would replace the earlier one.
    Called with check_output, before the command's work starts."""
    given = [(option, Path(path)) for option, path in outputs if path is not None]
    for (other, other_path), (option, path) in itertools.combinations(given, 2):
        if same_file(path, other_path):
            raise UserInputError(f"{other} {other_path} and {option} {path} are the same file; give each output its "
                                 "own name")


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[str]:
    """Delete the temporary files an interrupted `atomic_path` left in `folder` (names
    `.<target>.<8 characters>.tmp[.ext]`); returns their names. Only for a folder no other
    process writes into (a locked run folder)."""
    removed = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False) and _TEMPORARY.match(entry.name):
                os.unlink(entry.path)
                removed.append(entry.name)
    return sorted(removed)
