"""CSV tables a user writes: a header naming the columns, then one row a line.

One reader for all of them (`s4g neighbours --coords`, `s4g index --coords`, the csv
dataset's pairs.csv): UTF-8 with or without a byte-order mark, column names matched
case-insensitively (with aliases), blank rows skipped, every error naming the file and line.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from s4g.data._files import listed_path
from s4g.errors import UserInputError
from s4g.flags import Flag

LAT = ("lat", "latitude")
LON = ("lon", "lng", "long", "longitude")
FILE = ("file", "filename", "name", "path", "image")


def read_rows(
    path: str | os.PathLike,
    columns: Mapping[str, Sequence[str]],
    optional: Mapping[str, Sequence[str]] | None = None,
) -> list[tuple[int, dict[str, str]]]:
    """(line number, {column: stripped text}) for every non-blank row of a CSV with a header.

    columns: required column -> accepted header names (first = the one named in errors);
    optional: the same for columns that may be absent (absent -> "" in every row).
    Raises UserInputError naming the file for a missing file or column, bad UTF-8 or CSV.
    """
    path = Path(path)
    # exists, not is_file: a pipe (--coords <(command), /dev/stdin) is read once, like a file
    if not path.exists() or path.is_dir():
        what = "a folder" if path.is_dir() else "no such file"
        raise UserInputError(f"{path}: {what} (expected a CSV table with a header)")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise UserInputError(f"{path}: empty file; expected a header naming {', '.join(columns)}")
            lowered = [h.strip().lower() for h in header]
            where = {}
            for name, aliases in {**columns, **(optional or {})}.items():
                found = next((lowered.index(a) for a in aliases if a in lowered), None)
                if found is None and name in columns:
                    raise UserInputError(
                        f"{path}: the header {header} has no column {' / '.join(aliases)}; expected a "
                        f"header naming {', '.join(columns)}"
                    )
                where[name] = found
            rows = []
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                values = {n: (row[i].strip() if i is not None and i < len(row) else "") for n, i in where.items()}
                rows.append((reader.line_num, values))
    except UnicodeDecodeError as err:
        raise UserInputError(f"{path}: not a UTF-8 text file ({err.reason} at byte {err.start})") from None
    except csv.Error as err:
        raise UserInputError(f"{path}: not a readable CSV file ({err})") from None
    return rows


def parse_latlon(path: str | os.PathLike, line: int, lat: str, lon: str) -> tuple[float, float]:
    """(lat, lon) degrees from a row's text; UserInputError naming the line unless both are
    numbers with lat in [-90, 90] and lon in [-180, 180]."""
    try:
        la, lo = float(lat), float(lon)
    except ValueError:
        raise UserInputError(f"{path}, line {line}: lat/lon must be numbers in degrees, got {lat!r}, {lon!r}") from None
    if not (-90 <= la <= 90 and -180 <= lo <= 180):
        raise UserInputError(
            f"{path}, line {line}: lat/lon {la}, {lo} out of range (lat in [-90, 90], lon in [-180, 180] degrees)"
        )
    return la, lo


def read_coords(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(lat (N,), lon (N,)) float64 degrees of a CSV whose header names lat and lon columns."""
    rows = read_rows(path, {"lat": LAT, "lon": LON})
    latlon = np.array([parse_latlon(path, line, r["lat"], r["lon"]) for line, r in rows], dtype=np.float64)
    latlon = latlon.reshape(-1, 2)
    return latlon[:, 0].copy(), latlon[:, 1].copy()


def read_tiles(csv_path: str | os.PathLike, images_dir: str | os.PathLike) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(files relative to images_dir, lat (N,), lon (N,) float64 degrees) of a tile table.

    The header names a file column (file/filename/name/path/image), lat and lon; every listed
    image must exist in images_dir (UserInputError naming the line otherwise).
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise UserInputError(f"{Flag.IMAGES} {images_dir}: no such folder")
    rows = read_rows(csv_path, {"file": FILE, "lat": LAT, "lon": LON})
    if not rows:
        raise UserInputError(f"{csv_path}: expected a header and at least one row")
    files, lat, lon = [], [], []
    for line, r in rows:
        la, lo = parse_latlon(csv_path, line, r["lat"], r["lon"])
        rel = listed_path(r["file"], csv_path, line)
        if not rel or not (images_dir / rel).is_file():
            raise UserInputError(f"{csv_path}, line {line}: image {images_dir / rel} does not exist")
        files.append(rel)
        lat.append(la)
        lon.append(lo)
    return files, np.array(lat, dtype=np.float64), np.array(lon, dtype=np.float64)


__all__ = ["parse_latlon", "read_coords", "read_rows", "read_tiles"]
