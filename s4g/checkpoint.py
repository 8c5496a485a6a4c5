"""The s4g checkpoint format: a plain dict of tensors and JSON-like values, so it loads with
`torch.load(..., weights_only=True)`.

    {"format": "s4g-checkpoint", "version": 1, "backbone": str, "model": state dict,
     "config": run configuration (dataset, data_root, image sizes, ...), + training state}

`load_checkpoint` also takes a released Sample4Geo / timm ConvNeXt file and converts it on the
fly (s4g.weights); `import_weights` writes such a file as an s4g checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from s4g import weights
from s4g.errors import UserInputError
from s4g.fileio import atomic_path, load_torch_file, load_weights_file
from s4g.model import EmbeddingModel, check_backbone, empty_model, load_state_strict

CHECKPOINT_FORMAT = "s4g-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(
    path: str | os.PathLike, model: EmbeddingModel, config: Mapping[str, Any], **state: Any
) -> None:
    """Write an s4g checkpoint atomically (temporary name, then rename).

    config: the JSON-like run configuration (dataset, data_root, image sizes, ...), which
      `s4g eval` / `s4g mine` read back as their defaults.
    state: extra entries (optimizer, scheduler, epoch, RNG states, ...), tensors or plain values.
    """
    model = getattr(model, "module", model)  # unwrap DDP once, save plain keys
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "backbone": model.backbone,
        "model": model.state_dict(),
        "config": dict(config),
        **state,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def is_checkpoint(obj: Any) -> bool:
    """Whether a loaded file's content is an s4g checkpoint."""
    return isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The raw checkpoint dict (weights_only load); UserInputError if it is not an s4g one."""
    obj = load_torch_file(path)
    if not is_checkpoint(obj):
        raise UserInputError(f"{path}: not an s4g checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    return obj


def load_checkpoint(path: str | os.PathLike) -> tuple[EmbeddingModel, dict[str, Any]]:
    """(model on CPU in eval mode, run config dict) from an s4g checkpoint, loaded strictly.

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
    backbone = str(obj.get("backbone"))
    check_backbone(backbone)
    model = empty_model(backbone)
    load_state_strict(model, obj["model"], source=str(path), assign=True)
    return model.eval(), dict(obj.get("config", {}))


def import_weights(
    src: str | os.PathLike, out: str | os.PathLike, backbone: str | None = None, **sizes: Any
) -> tuple[dict[str, Any], list[str]]:
    """Convert a timm/Sample4Geo ConvNeXt file at `src` into an s4g checkpoint at `out`.

    sizes: dataset / aerial_size / ground_size for the stored config (weights.imported_config).
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


__all__ = [
    "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "import_weights", "is_checkpoint", "load_checkpoint",
    "read_checkpoint", "save_checkpoint",
]
