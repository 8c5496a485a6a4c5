"""The built-in world of `--dataset synthetic`: written once in CVUSA's layout, then reused.

The world lives under $XDG_CACHE_HOME/s4g/synthetic-<hash of its parameters> (~/.cache if
unset) unless the user names a folder. It is written beside its final place and renamed, and
a marker file records its parameters and the SHA-256 of its manifest (the list of its files), so
an interrupted write, or a world rewritten by `s4g synth --out`, is never mistaken for it.
Processes that prepare the same world at once each write their own copy and rename it into
place; the first rename wins, the others find the same world there and drop their copy, so
no lock is needed (none that holds on every shared file system exists).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import s4g
from s4g.app.synth.tasks import MANIFEST, read_manifest
from s4g.app.synth.writer import GENERATOR_VERSION, write_layout
from s4g.errors import UserInputError
from s4g.fileio import file_sha256
from s4g.flags import Flag

# One aerial tile per panorama, GPS for every class, test area apart from the training area.
LAYOUT = "cvusa"
# palette "unique" = one colour per building for roof and walls: learnable from scratch in
# minutes on 2 CPU cores (and partly by colour statistics alone, hence the colour baseline
# that training logs beside its own numbers).
KNOBS: dict[str, Any] = {"size": "small", "palette": "unique"}
_COMPLETE = ".s4g-complete"


def world_params(locations: int, seed: int) -> dict[str, Any]:
    """Everything the world's files depend on (its cache key and its marker's content)."""
    return {"layout": LAYOUT, "locations": int(locations), "seed": int(seed), "knobs": KNOBS,
            "generator": GENERATOR_VERSION, "s4g": s4g.__version__}


def default_root(locations: int, seed: int) -> Path:
    """$XDG_CACHE_HOME/s4g/synthetic-<12 hex digits of the parameters' hash>."""
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    key = hashlib.sha256(json.dumps(world_params(locations, seed), sort_keys=True).encode()).hexdigest()[:12]
    return Path(cache_home) / "s4g" / f"synthetic-{key}"


def _stale(root: Path, params: dict[str, Any]) -> str | None:
    """Why the world in `root` is not the complete world of `params` (None when it is): the
    marker records the parameters and the SHA-256 of the manifest, which lists every file."""
    try:
        record = json.loads((root / _COMPLETE).read_text())
    except (OSError, ValueError):
        return "its completion marker is unreadable"
    manifest = root / MANIFEST
    if record == params:  # an earlier s4g's marker, without the hash: the manifest itself must agree
        written = read_manifest(root) or {}
        if not written.get("complete") or [written.get(k) for k in ("layout", "locations", "seed")] != [
                params[k] for k in ("layout", "locations", "seed")]:
            return f"its files were rewritten after it was made ({MANIFEST} differs)"
    elif not isinstance(record, dict) or record.get("params") != params:
        return f"it was made with other parameters ({json.dumps(record, sort_keys=True)[:300]})"
    elif not manifest.is_file() or file_sha256(manifest) != record.get("manifest_sha256"):
        return f"its files were rewritten after it was made ({MANIFEST} changed)"
    listed = read_manifest(root)
    assert listed is not None  # each branch above returned unless the manifest is there
    missing = next((rel for rel in listed["files"] if not (root / rel).is_file()), None)
    return None if missing is None else f"its file {missing} is missing"


def ensure_world(root: str | os.PathLike | None, *, locations: int, seed: int) -> Path:
    """The absolute folder of a complete world with these parameters, written if needed.

    root None = default_root(), rebuilt when what it holds is not that world. A folder the
    user names that holds another world, an altered one, or other files, is refused
    (UserInputError naming it) rather than overwritten.
    """
    default = root is None
    root = Path(root).expanduser().resolve() if root is not None else default_root(locations, seed)
    params = world_params(locations, seed)
    if (root / _COMPLETE).is_file():
        why = _stale(root, params)
        if why is None:
            return root
        if not default:
            raise UserInputError(f"{Flag.DATA_ROOT} {root}: holds a synthetic world that is not the one asked for "
                                 f"(locations {locations}, seed {seed}): {why}; choose another folder")
        _clear_cache_folder(root, why)
    if root.exists() and any(root.iterdir()):
        raise UserInputError(
            f"{Flag.DATA_ROOT} {root}: the folder is not empty and holds no s4g synthetic world; "
            "give an empty or new folder"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        write_layout(LAYOUT, tmp, locations=locations, seed=seed, **KNOBS)
        record = {"params": params, "manifest_sha256": file_sha256(tmp / MANIFEST)}
        (tmp / _COMPLETE).write_text(json.dumps(record, sort_keys=True) + "\n")
        with contextlib.suppress(OSError):
            root.rmdir()  # an empty folder the user named (Windows cannot rename onto one)
        try:
            os.replace(tmp, root)
        except OSError:
            # Several processes (the nodes of one job sharing a cache folder, say) may write
            # the same world at once: the first rename wins and the others use its world,
            # which is the same files, generated from the same parameters.
            if not (root / _COMPLETE).is_file() or _stale(root, params) is not None:
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _clear_cache_folder(root: Path, why: str) -> None:
    """Remove a cache folder of s4g's whose world is stale (`why`), when it holds only the
    files s4g wrote there; UserInputError naming it otherwise."""
    manifest = read_manifest(root)
    own = {_COMPLETE, MANIFEST, *(manifest["files"] if manifest else [])}
    held = {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir()}
    if not held <= own:
        raise UserInputError(f"{root}: the cached synthetic world is stale ({why}) and the folder holds files "
                             "s4g did not write there; move the folder away, and the world is made again")
    shutil.rmtree(root)
