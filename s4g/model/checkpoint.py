"""The s4g checkpoint format: a plain dict of tensors and JSON-like values, so it loads with
`torch.load(..., weights_only=True)`.

    {"format": "s4g-checkpoint", "version": 2, "backbone": str, "model": state dict,
     "architecture": what rebuilds the model (EmbeddingModel.architecture: backbone, its timm
       arguments, head, head arguments, LoRA rank),
     "config": run configuration (dataset, data_root, image sizes, ...), + training state,
     "sha256": hex digest of every other entry (payload_digest)}

A file without "architecture" holds a model with the backbone's own pooling and no LoRA.

The digest is written at save time and checked at every load, so a byte changed on the disk
or in a copy is an error naming the file, never a silently different model. Version-1 files
(written before checksums existed) still load, with a warning that they cannot be verified.

`load_checkpoint` also takes a released Sample4Geo / timm ConvNeXt file and converts it on the
fly (s4g.model.weights); `import_weights` writes such a file as an s4g checkpoint.
"""

from __future__ import annotations

import hashlib
import os
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from s4g.errors import UserInputError
from s4g.fileio import OutputKind, save_torch
from s4g.model import weights
from s4g.model.encoder import EmbeddingModel, check_backbone, empty_model, load_state_strict
from s4g.model.weightfile import load_weights_file

CHECKPOINT_FORMAT = "s4g-checkpoint"
CHECKPOINT_VERSION = 2  # 2: carries "sha256"; 1: no checksum
# Entries every checkpoint has, and those a training run resumes from: (types, what it holds).
_Entries = dict[str, tuple[type | tuple[type, ...], str]]
MODEL_ENTRIES: _Entries = {"backbone": (str, "the backbone name"), "model": (Mapping, "the model's state dict"),
                           "config": (Mapping, "the run configuration")}
RUN_ENTRIES: _Entries = {"loss": (Mapping, "the loss state"), "optimizer": (Mapping, "the optimizer state"),
                         "scaler": (Mapping, "the gradient scaler state"), "epoch": (int, "the last epoch"),
                         "step": (int, "the step count"), "best_r1": ((int, float), "the best R@1"),
                         "rng": (Mapping, "the random generators' states")}


class UnverifiedCheckpointWarning(UserWarning):
    """A checkpoint written before s4g stored checksums was loaded without verification."""


def payload_digest(payload: Mapping[str, Any]) -> str:
    """Hex SHA-256 over every entry of a checkpoint dict but "sha256": keys, plain values,
    and each tensor's dtype, shape and bytes, in order. Tensors on a GPU are read back."""
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in payload.items() if k != "sha256"})
    return digest.hexdigest()


def _feed(digest, value: Any, where: str = "the checkpoint") -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        digest.update(f"T{t.dtype}{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, Mapping):
        digest.update(f"D{len(value)};".encode())
        for key, item in value.items():
            _feed(digest, key, f"a key of {where}")
            _feed(digest, item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        digest.update(f"S{len(value)};".encode())
        for i, item in enumerate(value):
            _feed(digest, item, f"{where}[{i}]")
    # The exact types: a subclass such as numpy.float64 (a float) passes isinstance, but
    # torch.load(weights_only=True) refuses it, so the file saved would never load again.
    elif value is None or type(value) in (bool, int, float, str):
        text = repr(value).encode("utf-8", "surrogatepass")
        digest.update(f"{type(value).__name__}{len(text)};".encode())
        digest.update(text)
    else:
        kind = type(value)
        raise TypeError(
            f"{where} is a {kind.__module__}.{kind.__qualname__}: a checkpoint holds tensors and plain values "
            "(bool, int, float, str, None, and lists, tuples and dicts of them); convert it first, "
            "e.g. with float(), int() or .tolist()"
        )


def save_checkpoint(
    path: str | os.PathLike, model: EmbeddingModel, config: Mapping[str, Any], **state: Any
) -> None:
    """Write an s4g checkpoint atomically (temporary name, then rename), with its digest.

    config: the JSON-like run configuration (dataset, data_root, image sizes, ...), which
      `s4g eval` / `s4g mine` read back as their defaults.
    state: extra entries (optimizer, scheduler, epoch, RNG states, ...), tensors or plain values.
    A failed write (disk full, ...) is an OSError naming `path`; the previous file is kept.
    """
    model = getattr(model, "module", model)  # unwrap DDP once, save plain keys
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "backbone": model.backbone,
        "architecture": model.architecture(),
        "model": model.state_dict(),
        "config": dict(config),
        **state,
    }
    payload["sha256"] = payload_digest(payload)
    save_torch(path, payload)


def is_checkpoint(obj: Any) -> bool:
    """Whether a loaded file's content is an s4g checkpoint."""
    return isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT


def _looks_like_checkpoint(path: Path) -> bool:
    """Whether the file is an s4g checkpoint, from its pickle record alone (no tensor read)."""
    with zipfile.ZipFile(path) as zf:
        record = next((i for i in zf.infolist() if i.filename.endswith("/data.pkl")), None)
        return record is not None and record.file_size <= 64 << 20 and CHECKPOINT_FORMAT.encode() in zf.read(record)


#: The kind of file `s4g import-weights --out` writes (s4g.fileio.check_output).
CHECKPOINT_FILE = OutputKind("an s4g checkpoint", _looks_like_checkpoint)


def verify(obj: Mapping[str, Any], path: str | os.PathLike, *, run_state: bool = False) -> dict[str, Any]:
    """`obj` (a loaded file) once it is known as an s4g checkpoint and its digest and entries are
    checked.

    run_state: also require what a training run resumes from (RUN_ENTRIES).
    Raises UserInputError naming `path` for a file that is not an s4g checkpoint, a version this
    s4g does not know, a digest that does not match, or a missing or malformed entry; warns
    (UnverifiedCheckpointWarning) for a version-1 file, which has no digest.
    """
    if not is_checkpoint(obj):
        raise UserInputError(f"{path}: not an s4g checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    version = obj.get("version", 1)
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise UserInputError(f"{path}: checkpoint version {version!r} is newer than this s4g reads; update s4g")
    stored = obj.get("sha256")
    if stored is None and version < 2:
        warnings.warn(UnverifiedCheckpointWarning(
            f"{path} was written by an s4g without checkpoint checksums, so damage to it cannot be "
            "detected; checkpoints written from now on carry one"), stacklevel=3)
    elif stored is None or stored != payload_digest(obj):
        what = "its checksum entry has been removed" if stored is None else "checksum mismatch: its contents changed"
        raise UserInputError(f"{path}: {what} after s4g wrote it (damaged on the disk or in a copy, or edited), so "
                             "its weights cannot be trusted; use another copy")
    entries = {**MODEL_ENTRIES, **(RUN_ENTRIES if run_state else {})}
    for key, (types, what) in entries.items():
        value = obj.get(key)
        if key not in obj or not isinstance(value, types) or (types is int and isinstance(value, bool)):
            found = "is missing" if key not in obj else f"holds a {type(value).__name__}"
            raise UserInputError(
                f"{path}: the checkpoint's '{key}' entry ({what}) {found}; the file is damaged or was "
                "not written by s4g" + ("" if not run_state else ", so training cannot resume from it")
            )
    bad = next((k for k, v in obj["model"].items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise UserInputError(f"{path}: the checkpoint's model entry {bad!r} is not a tensor; the file is damaged")
    return dict(obj)


def read_checkpoint(path: str | os.PathLike, *, run_state: bool = False) -> dict[str, Any]:
    """The verified checkpoint dict (weights_only load); UserInputError if it fails `verify`
    (run_state: it must also hold a training run's state)."""
    return verify(load_weights_file(path), path, run_state=run_state)


def load_checkpoint(path: str | os.PathLike) -> tuple[EmbeddingModel, dict[str, Any]]:
    """(model on CPU in eval mode, run config dict) from an s4g checkpoint, verified and
    loaded strictly.

    A file that is not an s4g checkpoint but a timm-layout ConvNeXt state dict (a released
    Sample4Geo model) is converted on the fly; its config holds the backbone and CVUSA's sizes.
    """
    obj = load_weights_file(path)
    if not is_checkpoint(obj):
        try:
            model, backbone, _ = weights.load_timm_weights(obj, str(path))
        except UserInputError as err:
            raise UserInputError(
                f"{path}: neither an s4g checkpoint (no '{CHECKPOINT_FORMAT}' marker) nor "
                f"importable timm ConvNeXt weights: {err}"
            ) from err
        return model, weights.imported_config(backbone, path)
    obj = verify(obj, path)
    arch = obj.get("architecture", {})  # what rebuilds the model
    if not (isinstance(arch, Mapping) and isinstance(arch.get("backbone_args", {}), Mapping)
            and isinstance(arch.get("head_args", {}), Mapping)):
        raise UserInputError(f"{path}: the checkpoint's 'architecture' entry is malformed; the file is damaged")
    arch = dict(arch)
    backbone = arch.pop("backbone", obj["backbone"])
    check_backbone(backbone)
    if unknown := set(arch) - {"backbone_args", "head", "head_args", "lora_rank"}:
        raise UserInputError(f"{path}: the checkpoint's architecture has entries this s4g does not know "
                             f"({', '.join(sorted(unknown))}); update s4g")
    model = empty_model(backbone, **arch)
    load_state_strict(model, obj["model"], source=str(path), assign=True)
    return model.eval(), dict(obj["config"])


def import_weights(
    src: str | os.PathLike, out: str | os.PathLike, backbone: str | None = None, **sizes: Any
) -> tuple[dict[str, Any], list[str]]:
    """Convert a timm/Sample4Geo ConvNeXt file at `src` into an s4g checkpoint at `out`.

    sizes: preset / dataset / aerial_size / ground_size for the stored config (weights.imported_config).
    Returns (the stored config, the source keys that were deliberately ignored).
    """
    if backbone is not None:
        weights.check_convnext_backbone(backbone)
    obj = load_weights_file(src)
    if is_checkpoint(obj):
        raise UserInputError(f"{src} is already an s4g checkpoint; use it as it is")
    model, backbone, ignored = weights.load_timm_weights(obj, str(src), backbone)
    config = weights.imported_config(backbone, src, **sizes)
    save_checkpoint(out, model, config)
    return config, ignored


__all__ = ["CHECKPOINT_FILE", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "MODEL_ENTRIES", "RUN_ENTRIES",
           "UnverifiedCheckpointWarning", "import_weights", "is_checkpoint", "load_checkpoint", "payload_digest",
           "read_checkpoint", "save_checkpoint", "verify"]
