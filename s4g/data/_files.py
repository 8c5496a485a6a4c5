"""Shared file-system helpers of the dataset loaders.

Indexing a dataset must never open an image: folders are listed once with os.scandir and
listed files are checked by set membership, so 100k files cost a few directory reads, not
100k stat calls.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PureWindowsPath

from s4g.errors import UserInputError
from s4g.flags import Flag

#: The image formats s4g decodes (torchvision's decoders), by Pillow's name, and their suffixes.
IMAGE_FORMATS = {"JPEG": (".jpg", ".jpeg"), "PNG": (".png",), "WEBP": (".webp",), "GIF": (".gif",)}
IMAGE_SUFFIXES = tuple(suffix for suffixes in IMAGE_FORMATS.values() for suffix in suffixes)


def require_root(root: str | os.PathLike, dataset: str) -> Path:
    """The dataset root as an absolute Path; UserInputError if it is not a folder."""
    path = Path(root).expanduser()
    if not path.is_dir():
        raise UserInputError(
            f"data root {str(path)!r} for dataset {dataset!r} does not exist or is not a folder; "
            f"pass the folder that holds the dataset as {Flag.DATA_ROOT}."
        )
    return path.resolve()


def require_dir(path: Path, what: str) -> Path:
    """`path` if it is a folder; UserInputError naming it and `what` it should hold otherwise."""
    if not path.is_dir():
        raise UserInputError(f"expected the folder {str(path)!r} ({what}), but it does not exist.")
    return path


def require_file(path: Path, what: str) -> Path:
    """`path` if it is a file; UserInputError naming it and `what` it should be otherwise."""
    if not path.is_file():
        raise UserInputError(f"expected the file {str(path)!r} ({what}), but it does not exist.")
    return path


def list_names(folder: Path) -> set[str]:
    """Names of the regular files (or links to files) in `folder`; empty set if it is missing."""
    try:
        with os.scandir(folder) as entries:
            return {e.name for e in entries if e.is_file()}
    except (FileNotFoundError, NotADirectoryError):
        return set()


def list_subdirs(folder: Path) -> list[str]:
    """Sorted names of the sub-folders of `folder` (hidden ones skipped)."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def list_images(folder: Path) -> list[str]:
    """Sorted names of the image files in `folder` (by suffix; hidden files skipped)."""
    return sorted(
        n for n in list_names(folder)
        if not n.startswith(".") and n.lower().endswith(IMAGE_SUFFIXES)
    )


def listed_path(entry: str, source: str | os.PathLike, lineno: int) -> str:
    """A file path as a split file or table lists it, with either separator accepted.

    Lists written on Windows (`bingmap\\19\\0000019.jpg`) read everywhere: on POSIX every
    backslash is taken as a separator. A path with a drive letter or UNC share (`C:\\data\\x.jpg`)
    is absolute on Windows and kept; elsewhere it names nothing, so it is a UserInputError
    naming `source` and `lineno`. Relative results are joined to a folder by the caller.
    """
    entry = entry.strip()
    if os.name == "nt":
        return entry
    drive = PureWindowsPath(entry).drive
    if drive:
        raise UserInputError(
            f"{str(source)!r} line {lineno}: {entry!r} is a Windows path (drive {drive!r}), which names "
            "no file on this system; list the file relative to the list's folder or as an absolute "
            "path here."
        )
    return entry.replace("\\", "/")


def check_listed(files: Iterable[str], source: str | os.PathLike) -> None:
    """Raise UserInputError if any of the absolute paths `files` does not exist.

    One directory listing per distinct parent folder; `source` (the split file or table that
    listed them) is named in the message so the user knows where the bad entry came from.
    """
    by_dir: dict[str, set[str]] = {}
    missing: list[str] = []
    for f in files:
        parent, name = os.path.split(f)
        names = by_dir.get(parent)
        if names is None:
            names = by_dir[parent] = list_names(Path(parent))
        if name not in names:
            missing.append(f)
    if missing:
        raise UserInputError(
            f"{len(missing)} image(s) listed in {str(source)!r} do not exist, e.g. "
            f"{missing[0]!r}; check that the data root holds the complete dataset in the "
            "expected layout."
        )


def read_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of the non-empty lines of a UTF-8 text file (a
    byte-order mark is skipped)."""
    try:
        with open(path, encoding="utf-8-sig") as fh:
            return [(n, line.strip()) for n, line in enumerate(fh, start=1) if line.strip()]
    except UnicodeDecodeError as err:
        raise UserInputError(f"{str(path)!r}: not a UTF-8 text file ({err.reason} at byte {err.start})") from None
