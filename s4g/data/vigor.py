"""VIGOR: panoramas in four US cities against dense, overlapping aerial tiles.

Two image layouts are accepted, detected from the disk: the original release
`{City}/satellite/` + `{City}/panorama/`, and the reference implementation's
`satellite/{City}/` + `ground/{City}/`. Split files live in `{split_dir}/{City}/`
(`splits` or e.g. `splits__corrected`): `satellite_list.txt` (one tile name a line; their
concatenation over the split's cities, in city order, is the reference index),
`same_area_balanced_{train,test}.txt` and `pano_label_balanced.txt` (13 columns: pano,
positive tile, dy, dx, then three semi-positive tiles each with dy, dx). The corrected-label
release (`splits__corrected/`) names its panorama lists `*__corrected.txt` and keeps
`satellite_list.txt`; either naming is accepted in any split folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from s4g.data._files import check_listed, read_lines, require_file, require_root
from s4g.data.records import EvalSet, TrainSet
from s4g.errors import UserInputError

CITIES = ("Chicago", "NewYork", "SanFrancisco", "Seattle")
CROSS_TRAIN = ("NewYork", "Seattle")
CROSS_TEST = ("Chicago", "SanFrancisco")
EVAL_SPLITS = ("test",)
SEMI_COLUMNS = (4, 7, 10)
TILE_PREFIX = "satellite_"


def detect_layout(root: Path, cities: tuple[str, ...]) -> tuple[dict[str, Path], dict[str, Path]]:
    """Per-city (panorama folder, satellite folder) of whichever layout is on disk."""
    original = all((root / c / "satellite").is_dir() and (root / c / "panorama").is_dir() for c in cities)
    reference = all((root / "satellite" / c).is_dir() and (root / "ground" / c).is_dir() for c in cities)
    if original:
        return {c: root / c / "panorama" for c in cities}, {c: root / c / "satellite" for c in cities}
    if reference:
        return {c: root / "ground" / c for c in cities}, {c: root / "satellite" / c for c in cities}
    raise UserInputError(
        f"{str(root)!r} is not a VIGOR tree for the cities {', '.join(cities)}: expected either "
        "{City}/satellite/ and {City}/panorama/ (original release) or satellite/{City}/ and "
        "ground/{City}/ (reference implementation) for every one of them."
    )


def tile_latlon(name: str, source: Path, line: int | None = None) -> tuple[float, float]:
    """(lat, lon) degrees from a tile name `satellite_{lat}_{lon}.png` (listed at `line` of
    `source`, named in the error)."""
    stem = os.path.splitext(name)[0]
    parts = stem.split("_")
    try:
        if len(parts) != 3 or parts[0] != "satellite":
            raise ValueError
        return float(parts[1]), float(parts[2])
    except ValueError:
        where = f"{str(source)!r}" + ("" if line is None else f" line {line}")
        raise UserInputError(
            f"{where}: tile name {name!r} is not of the form satellite_{{lat}}_{{lon}}.png; a tile list "
            "names satellite tiles only."
        ) from None


def _pano_positions(files: list[str]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(lat, lon) (Q,) degrees from panorama names `{panoid},{lat},{lon},.jpg`; both None when
    a name does not follow that form."""
    try:
        latlon = np.array([os.path.basename(f).split(",")[1:3] for f in files], dtype=np.float64)
    except ValueError:
        return None, None
    if latlon.shape != (len(files), 2):
        return None, None
    return latlon[:, 0], latlon[:, 1]


def _references(root: Path, split_dir: str, cities, sat_dirs) -> tuple[list[str], dict, np.ndarray, np.ndarray]:
    """Reference files, {(city, name): index}, lat, lon over `cities` in order."""
    files: list[str] = []
    index: dict[tuple[str, str], int] = {}
    lat, lon = [], []
    for city in cities:
        path = require_file(root / split_dir / city / "satellite_list.txt", f"VIGOR {city} tile list")
        start = len(files)
        for lineno, name in read_lines(path):
            if (city, name) in index:
                raise UserInputError(f"{str(path)!r} line {lineno} lists the tile {name!r} a second time.")
            index[(city, name)] = len(files)
            files.append(str(sat_dirs[city] / name))
            la, lo = tile_latlon(name, path, lineno)
            lat.append(la)
            lon.append(lo)
        if len(files) == start:
            raise UserInputError(f"the VIGOR tile list {str(path)!r} is empty.")
        check_listed(files[start:], path)
    return files, index, np.asarray(lat), np.asarray(lon)


def _pano_list(folder: Path, list_name: str, city: str) -> Path:
    """The panorama list `list_name` in `folder`, or its corrected-release twin
    `<stem>__corrected.txt`; UserInputError when neither or both exist."""
    found = [p for p in (folder / list_name, folder / f"{Path(list_name).stem}__corrected.txt") if p.is_file()]
    if len(found) == 1:
        return found[0]
    names = f"{list_name!r} or {Path(list_name).stem + '__corrected.txt'!r}"
    if not found:
        raise UserInputError(f"expected the VIGOR {city} panorama list {names} in {str(folder)!r}, but neither exists.")
    raise UserInputError(f"{str(folder)!r} holds both {names}; keep the one to train and evaluate with.")


def _check_pano_columns(path: Path, lineno: int, cols: list[str]) -> None:
    """UserInputError naming the line when the panorama column names a satellite tile or a
    tile column does not (columns swapped or shifted)."""
    tile_columns = (1, *SEMI_COLUMNS)
    wrong = [c for c in tile_columns if not cols[c].startswith(TILE_PREFIX)]
    if cols[0].startswith(TILE_PREFIX) or wrong:
        column = 1 if cols[0].startswith(TILE_PREFIX) else wrong[0] + 1
        raise UserInputError(
            f"{str(path)!r} line {lineno}: column {column} names {cols[column - 1]!r}, but column 1 must name "
            f"a panorama and columns {', '.join(str(c + 1) for c in tile_columns)} satellite tiles "
            f"({TILE_PREFIX}{{lat}}_{{lon}}.png); are the columns swapped?"
        )


def _pano_rows(root: Path, split_dir: str, cities, pano_dirs, list_name: str, index: dict):
    """(pano files, positive indices (Q,), semi-positive indices (Q, 3)) of the split files."""
    files: list[str] = []
    pos: list[int] = []
    semi: list[list[int]] = []
    for city in cities:
        path = _pano_list(root / split_dir / city, list_name, city)
        start = len(files)
        for lineno, line in read_lines(path):
            cols = line.split()
            if len(cols) < 11:
                raise UserInputError(
                    f"{str(path)!r} line {lineno}: expected 13 whitespace-separated columns "
                    f"(pano, pos tile, dy, dx, then 3 x (semi tile, dy, dx)), got {len(cols)}."
                )
            _check_pano_columns(path, lineno, cols)
            try:
                pos.append(index[(city, cols[1])])
                semi.append([index[(city, cols[c])] for c in SEMI_COLUMNS])
            except KeyError as err:
                raise UserInputError(
                    f"{str(path)!r} line {lineno}: tile {err.args[0][1]!r} is not in "
                    f"{split_dir}/{city}/satellite_list.txt."
                ) from None
            files.append(str(pano_dirs[city] / cols[0]))
        if len(files) == start:
            raise UserInputError(f"the VIGOR panorama list {str(path)!r} is empty.")
        check_listed(files[start:], path)
    return files, np.asarray(pos, dtype=np.int64), np.asarray(semi, dtype=np.int64).reshape(-1, 3)


def _split_spec(mode: str, train: bool) -> tuple[tuple[str, ...], str]:
    if mode == "same":
        return CITIES, "same_area_balanced_train.txt" if train else "same_area_balanced_test.txt"
    if mode == "cross":
        return (CROSS_TRAIN if train else CROSS_TEST), "pano_label_balanced.txt"
    raise ValueError(f"VIGOR mode must be 'same' or 'cross', got {mode!r}")


def load_train(root: str | os.PathLike, *, mode: str, split_dir: str = "splits") -> TrainSet:
    """Training pairs of the same-area or cross-area protocol.

    Classes are only the tiles that are some training panorama's positive, re-indexed densely
    in reference-index order; class_lat/lon come from the tile names.
    """
    base = require_root(root, f"vigor-{mode}")
    cities, list_name = _split_spec(mode, train=True)
    pano_dirs, sat_dirs = detect_layout(base, cities)
    refs, index, lat, lon = _references(base, split_dir, cities, sat_dirs)
    panos, pos, _ = _pano_rows(base, split_dir, cities, pano_dirs, list_name, index)
    used, pair_class = np.unique(pos, return_inverse=True)
    return TrainSet(
        f"vigor-{mode}", panos, [refs[i] for i in used], pair_class.astype(np.int64),
        lat[used], lon[used], query_kind="panorama",
    )


def load_eval(root: str | os.PathLike, split: str = "test", *, mode: str, split_dir: str = "splits") -> EvalSet:
    """Test panoramas against every tile of the test cities, with (Q, 3) semi-positives."""
    if split not in EVAL_SPLITS:
        raise UserInputError(f"unknown VIGOR split {split!r}; valid: {', '.join(EVAL_SPLITS)}.")
    base = require_root(root, f"vigor-{mode}")
    cities, list_name = _split_spec(mode, train=False)
    pano_dirs, sat_dirs = detect_layout(base, cities)
    refs, index, lat, lon = _references(base, split_dir, cities, sat_dirs)
    panos, pos, semi = _pano_rows(base, split_dir, cities, pano_dirs, list_name, index)
    query_lat, query_lon = _pano_positions(panos)
    return EvalSet(
        f"vigor-{mode}", panos, refs, pos, np.arange(len(refs), dtype=np.int64),
        semi_positives=semi, reference_lat=lat, reference_lon=lon, query_lat=query_lat, query_lon=query_lon,
    )
