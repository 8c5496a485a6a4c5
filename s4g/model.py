"""The siamese encoder: one torchvision backbone for both views → pooled, L2-normalised embedding.

Checkpoints are plain dicts of tensors and JSON-like values, so they load with
`torch.load(..., weights_only=True)`; the model's state dict keeps torchvision's key names
under the `encoder.` prefix.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn
from torchvision.models.convnext import CNBlockConfig, ConvNeXt

from s4g.errors import UserInputError
from s4g.fileio import atomic_path

CHECKPOINT_FORMAT = "s4g-checkpoint"
CHECKPOINT_VERSION = 1


def _convnext_micro(weights: None = None) -> ConvNeXt:
    # A ~0.3 M-parameter ConvNeXt built from torchvision's own class, for CPU-sized runs on
    # the synthetic world; there are no pretrained weights for it.
    settings = [
        CNBlockConfig(24, 48, 1),
        CNBlockConfig(48, 96, 1),
        CNBlockConfig(96, 192, 2),
        CNBlockConfig(192, None, 1),
    ]
    return ConvNeXt(settings, stochastic_depth_prob=0.0)


# name -> (builder, weights enum or None). Builders take torchvision's keyword-only `weights`.
BACKBONES: dict[str, tuple[Callable[..., nn.Module], Any]] = {
    "convnext_micro": (_convnext_micro, None),
    "convnext_tiny": (tvm.convnext_tiny, tvm.ConvNeXt_Tiny_Weights),
    "convnext_small": (tvm.convnext_small, tvm.ConvNeXt_Small_Weights),
    "convnext_base": (tvm.convnext_base, tvm.ConvNeXt_Base_Weights),
    "convnext_large": (tvm.convnext_large, tvm.ConvNeXt_Large_Weights),
    "resnet18": (tvm.resnet18, tvm.ResNet18_Weights),
    "resnet34": (tvm.resnet34, tvm.ResNet34_Weights),
    "resnet50": (tvm.resnet50, tvm.ResNet50_Weights),
    "resnet101": (tvm.resnet101, tvm.ResNet101_Weights),
}


def _check_backbone(name: str) -> None:
    if name not in BACKBONES:
        raise UserInputError(
            f"unknown backbone {name!r}; choose one of: {', '.join(sorted(BACKBONES))}"
        )


class EmbeddingModel(nn.Module):
    """Shared encoder for ground and aerial images.

    forward(x): x (B, 3, H, W) float, ImageNet-normalised, any H and W the backbone accepts
    -> (B, D) float32, L2-normalised. D is `embed_dim` (1024 for convnext_base).
    """

    def __init__(self, backbone: str, encoder: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.encoder = encoder
        # Drop the classification layer: global average pool (+ ConvNeXt's final LayerNorm)
        # is the embedding, as in Sample4Geo.
        if isinstance(encoder, ConvNeXt):
            self.embed_dim = encoder.classifier[-1].in_features
            encoder.classifier[-1] = nn.Identity()
        elif isinstance(encoder, tvm.ResNet):
            self.embed_dim = encoder.fc.in_features
            encoder.fc = nn.Identity()
        else:  # pragma: no cover - BACKBONES only lists the two families above
            raise TypeError(f"unsupported encoder type {type(encoder).__name__}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encoder(x).float(), dim=-1)


def build_model(
    backbone: str = "convnext_base",
    *,
    pretrained: bool = False,
    weights_file: str | os.PathLike | None = None,
) -> EmbeddingModel:
    """A fresh EmbeddingModel.

    pretrained: start from torchvision's ImageNet weights (downloaded by torchvision).
    weights_file: a local torchvision-layout state dict of the same backbone (classifier
      keys are ignored), loaded strictly; for machines that cannot download.
    """
    _check_backbone(backbone)
    builder, weights_enum = BACKBONES[backbone]
    weights = None
    if pretrained and weights_file is None:
        if weights_enum is None:
            raise UserInputError(f"backbone {backbone!r} has no pretrained weights; drop --pretrained")
        weights = weights_enum.DEFAULT
    try:
        encoder = builder(weights=weights)
    except (OSError, RuntimeError) as err:  # torchvision's download failed
        raise UserInputError(
            f"could not fetch the pretrained weights of {backbone!r} ({err}); on a machine "
            "without internet access pass a local state dict with --weights FILE"
        ) from err
    model = EmbeddingModel(backbone, encoder)
    if weights_file is not None:
        state = _torch_load(weights_file)
        state = state.get("state_dict", state) if isinstance(state, Mapping) else state
        if not isinstance(state, Mapping):
            raise UserInputError(f"{weights_file}: not a state dict")
        head = ("classifier.2.", "fc.")  # the ImageNet classifier we replace
        state = {k: v for k, v in state.items() if not k.startswith(head)}
        load_state_strict(model.encoder, state, source=str(weights_file))
    return model


def load_state_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """module.load_state_dict(state) that fails loudly, never a silent partial load.

    Raises UserInputError naming `source` and listing missing, unexpected and mis-shaped keys.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape = sorted(
        f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shape)):
            if keys:
                shown = ", ".join(keys[:10]) + (f", … ({len(keys)} in all)" if len(keys) > 10 else "")
                parts.append(f"{label} keys: {shown}")
        raise UserInputError(f"{source} does not fit the model: " + "; ".join(parts))
    module.load_state_dict(state, strict=True)


def _torch_load(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as err:
        raise UserInputError(
            f"{path}: not a readable PyTorch file, or it holds objects other than tensors and "
            f"plain values (refused for safety): {err}"
        ) from err


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


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The raw checkpoint dict (weights_only load); UserInputError if it is not an s4g one."""
    obj = _torch_load(path)
    if not (isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT):
        raise UserInputError(f"{path}: not an s4g checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    return obj


def load_checkpoint(path: str | os.PathLike) -> tuple[EmbeddingModel, dict[str, Any]]:
    """(model on CPU in eval mode, run config dict) from an s4g checkpoint, loaded strictly."""
    ckpt = read_checkpoint(path)
    backbone = ckpt.get("backbone")
    _check_backbone(str(backbone))
    model = build_model(backbone)
    load_state_strict(model, ckpt["model"], source=str(path))
    return model.eval(), dict(ckpt.get("config", {}))
