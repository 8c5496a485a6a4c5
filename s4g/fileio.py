"""The file edge: atomic output files, the safe reader of PyTorch files, file hashes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from s4g.errors import UserInputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it onto `path`.

    A crash or exception leaves any previous file at `path` untouched and removes the
    temporary file. `suffix` keeps extensions that writers insist on (np.savez adds ".npz").
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp makes the file private (0600); give it the mode a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """np.savez to `path` atomically."""
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def save_json(path: str | os.PathLike, obj: object) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def load_torch_file(path: str | os.PathLike) -> Any:
    """The content of a PyTorch file, loaded with weights_only=True onto the CPU.

    Files are untrusted input: anything but tensors and plain values is refused. Raises
    UserInputError naming the file when it is missing, unreadable or refused.
    """
    import torch  # on use: this module also serves the CLI's light path (s4g --help) and s4g synth

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - garbage bytes raise KeyError, IndexError, ...
        # torch's refusal runs to a page of advice; its one informative line names the class.
        reason = next(
            (ln.split(":", 1)[1].strip() for ln in str(err).splitlines() if "WeightsUnpickler error" in ln),
            f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}",
        )
        raise UserInputError(
            f"{path}: not a readable PyTorch file, or it holds objects other than tensors and "
            f"plain values (refused for safety): {reason}"
        ) from err


# safetensors dtype names -> torch dtype names (the subset weights files use)
_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
                       "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def load_safetensors(path: str | os.PathLike) -> dict[str, Any]:
    """{name: tensor} of a .safetensors file (Hugging Face's format: an 8-byte little-endian
    header length, a JSON header of dtype/shape/data_offsets, then raw little-endian bytes).

    Parsed here with the standard library: the format holds no code, and reading it needs no
    extra package. Raises UserInputError naming the file when it is not such a file.
    """
    import torch  # on use, as in load_torch_file

    path = Path(path)
    data = path.read_bytes()
    try:
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + size])
        body = memoryview(data)[8 + size :]
        tensors = {}
        for name, spec in header.items():
            if name == "__metadata__":
                continue
            dtype = getattr(torch, _SAFETENSORS_DTYPES[spec["dtype"]])
            start, end = (int(v) for v in spec["data_offsets"])
            if not 0 <= start <= end <= len(body):
                raise ValueError(f"tensor {name!r} lies outside the file")
            flat = torch.frombuffer(bytearray(body[start:end]), dtype=dtype) if end > start else torch.empty(0, dtype=dtype)
            tensors[name] = flat.reshape([int(v) for v in spec["shape"]])
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise UserInputError(f"{path}: not a readable .safetensors file ({type(err).__name__}: {err})") from None
    return tensors


def load_weights_file(path: str | os.PathLike) -> Any:
    """The content of a weights file: .safetensors by its suffix, else a PyTorch file."""
    if Path(path).suffix == ".safetensors":
        if not Path(path).is_file():
            raise UserInputError(f"{path}: no such file")
        return load_safetensors(path)
    return load_torch_file(path)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (streamed in 4 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()
