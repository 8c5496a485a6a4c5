"""The built-in world of `--dataset synthetic`: written once in CVUSA's layout, then reused.

The world lives under $XDG_CACHE_HOME/s4g/synthetic-<hash of its parameters> (~/.cache if
unset) unless the user names a folder. It is written beside its final place and renamed, and
a marker file records its parameters, so an interrupted write is never mistaken for a world.
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
from s4g.errors import UserInputError
from s4g.synth.writer import GENERATOR_VERSION, write_layout

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


def ensure_world(root: str | os.PathLike | None, *, locations: int, seed: int) -> Path:
    """The absolute folder of a complete world with these parameters, written if needed.

    root None = default_root(). A folder holding a world of other parameters, or other files,
    is refused (UserInputError naming it) rather than overwritten.
    """
    root = Path(root).expanduser().resolve() if root is not None else default_root(locations, seed)
    params = world_params(locations, seed)
    if _complete(root, params):
        return root
    if root.exists() and any(root.iterdir()):
        raise UserInputError(
            f"--data-root {root}: the folder is not empty and holds no s4g synthetic world; "
            "give an empty or new folder"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        write_layout(LAYOUT, tmp, locations=locations, seed=seed, **KNOBS)
        (tmp / _COMPLETE).write_text(json.dumps(params, sort_keys=True) + "\n")
        with contextlib.suppress(OSError):
            root.rmdir()  # an empty folder the user named (Windows cannot rename onto one)
        try:
            os.replace(tmp, root)
        except OSError:
            # Several processes (the nodes of one job sharing a cache folder, say) may write
            # the same world at once: the first rename wins and the others use its world,
            # which is the same files, generated from the same parameters.
            if not _complete(root, params):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _complete(root: Path, params: dict[str, Any]) -> bool:
    """Whether `root` holds a finished world of `params` (UserInputError for another world's)."""
    marker = root / _COMPLETE
    if not marker.is_file():
        return False
    if json.loads(marker.read_text()) != params:
        raise UserInputError(
            f"--data-root {root}: holds a synthetic world made with other parameters "
            f"({marker.read_text().strip()}); choose another folder"
        )
    return True
