"""Reading weights and checkpoint files, which are untrusted input: a PyTorch file is loaded
with weights_only=True (tensors and plain values only), a .safetensors file is parsed and
memory-mapped here. Every refusal is a UserInputError naming the file."""

from __future__ import annotations

import json
import mmap
import os
import re
from pathlib import Path
from typing import Any

import torch

from s4g.errors import UserInputError


def load_weights_file(path: str | os.PathLike) -> Any:
    """The content of a weights or checkpoint file: .safetensors by its suffix (load_safetensors),
    else a PyTorch file loaded with weights_only=True onto the CPU.

    Files are untrusted input: anything but tensors and plain values is refused. Raises
    UserInputError naming the file when it is missing, a folder, unreadable or refused.
    """
    path = Path(path)
    if path.is_dir():
        held = next((path / name for name in ("best.pt", "last.pt") if (path / name).is_file()), None)
        hint = f"; to use the run's checkpoint, give {held}" if held is not None else "; give the file's path"
        raise UserInputError(f"{path} is a folder, not a file{hint}")
    if not path.is_file():
        raise UserInputError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    try:
        with open(path, "rb") as fh:
            return torch.load(fh, map_location="cpu", weights_only=True)
    except Exception as err:  # garbage bytes raise KeyError, IndexError, ...
        if isinstance(err, OSError) and err.filename is not None:
            raise
        raise UserInputError(
            f"{path}: not a readable PyTorch file, or it holds objects other than tensors and "
            f"plain values (refused for safety: loading such a file could run code): {_refusal(err)}"
        ) from err


def _refusal(err: Exception) -> str:
    """The informative part of torch's refusal, without its advice to load unsafely."""
    text = str(err)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return f"it refers to {found.group(1)}, which is not a tensor or a plain value"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    boilerplate = ("Check the documentation", "Weights only load failed")
    useful = [ln for ln in lines if "weights_only" not in ln and not ln.startswith(boilerplate)]
    return f"{type(err).__name__}: {useful[0] if useful else (lines[0] if lines else '')}"


# safetensors dtype names -> torch dtype names (the subset weights files use)
_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
                       "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def load_safetensors(path: str | os.PathLike) -> dict[str, Any]:
    """{name: tensor} of a .safetensors file (Hugging Face's format: an 8-byte little-endian
    header length, a JSON header of dtype/shape/data_offsets, then raw little-endian bytes).

    Parsed here with the standard library (the format holds no code): the file is memory-
    mapped copy-on-write and each tensor is a view of its bytes, read from the disk as used
    (one copy only for a tensor whose offset does not suit its type). Raises UserInputError
    naming the file when it is not such a file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = torch.frombuffer(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY), dtype=torch.uint8)
        size = int.from_bytes(data[:8].numpy().tobytes(), "little")
        header = json.loads(data[8 : 8 + size].numpy().tobytes())
        if not isinstance(header, dict):
            raise TypeError(f"the header is a JSON {type(header).__name__}, not an object of tensors")
        body = data[8 + size :]
        tensors = {}
        for name, spec in header.items():
            if name == "__metadata__":
                continue
            dtype = getattr(torch, _SAFETENSORS_DTYPES[spec["dtype"]])
            start, end = (int(v) for v in spec["data_offsets"])
            if not 0 <= start <= end <= len(body):
                raise ValueError(f"tensor {name!r} lies outside the file")
            raw = body[start:end]
            if raw.storage_offset() % dtype.itemsize:
                raw = raw.clone()
            tensors[name] = raw.view(dtype).reshape([int(v) for v in spec["shape"]])
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise UserInputError(f"{path}: not a readable .safetensors file ({type(err).__name__}: {err})") from None
    return tensors
