"""The siamese encoder: one torchvision backbone for both views → pooled, L2-normalised embedding.

The state dict keeps torchvision's key names under the `encoder.` prefix. Where the initial
weights come from is s4g.weights; how trained ones are stored is s4g.checkpoint.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn
from torchvision.models.convnext import CNBlockConfig, ConvNeXt

from s4g.errors import UserInputError


def _convnext_micro(weights: None = None, layer_scale: float = 1e-6) -> ConvNeXt:
    # A 0.6 M-parameter ConvNeXt built from torchvision's own class, for CPU-sized runs on
    # the synthetic world; there are no pretrained weights for it.
    settings = [
        CNBlockConfig(24, 48, 1),
        CNBlockConfig(48, 96, 1),
        CNBlockConfig(96, 192, 2),
        CNBlockConfig(192, None, 1),
    ]
    return ConvNeXt(settings, stochastic_depth_prob=0.0, layer_scale=layer_scale)


def _convnext_micro_ls1(weights: None = None) -> ConvNeXt:
    # Layer scale initialised to 1 instead of 1e-6: from scratch, blocks that start as
    # near-identities barely move in the few hundred steps of the synthetic default.
    return _convnext_micro(layer_scale=1.0)


def _no_drop_path(builder: Callable[..., ConvNeXt]) -> Callable[..., ConvNeXt]:
    # torchvision's ConvNeXts default to stochastic depth 0.1-0.5; the published models were
    # trained with timm's default of none (drop_path_rate 0), and so are s4g's.
    return functools.partial(builder, stochastic_depth_prob=0.0)


# name -> (builder, weights enum or None). Builders take torchvision's keyword-only `weights`.
BACKBONES: dict[str, tuple[Callable[..., nn.Module], Any]] = {
    "convnext_micro": (_convnext_micro, None),
    "convnext_micro_ls1": (_convnext_micro_ls1, None),
    "convnext_tiny": (_no_drop_path(tvm.convnext_tiny), tvm.ConvNeXt_Tiny_Weights),
    "convnext_small": (_no_drop_path(tvm.convnext_small), tvm.ConvNeXt_Small_Weights),
    "convnext_base": (_no_drop_path(tvm.convnext_base), tvm.ConvNeXt_Base_Weights),
    "convnext_large": (_no_drop_path(tvm.convnext_large), tvm.ConvNeXt_Large_Weights),
    "resnet18": (tvm.resnet18, tvm.ResNet18_Weights),
    "resnet34": (tvm.resnet34, tvm.ResNet34_Weights),
    "resnet50": (tvm.resnet50, tvm.ResNet50_Weights),
    "resnet101": (tvm.resnet101, tvm.ResNet101_Weights),
}


def check_backbone(name: str) -> None:
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


def build_model(backbone: str = "convnext_base", weights: Any = None) -> EmbeddingModel:
    """A fresh EmbeddingModel: random initialisation, or torchvision's `weights` enum entry
    (downloaded by torchvision; s4g.weights.initial_model chooses and reports failures)."""
    check_backbone(backbone)
    return EmbeddingModel(backbone, BACKBONES[backbone][0](weights=weights))


def empty_model(backbone: str) -> EmbeddingModel:
    """An EmbeddingModel whose tensors are on the meta device: no memory, no random init.

    Only for filling at once with load_state_strict(..., assign=True), or for looking at
    the layers; building a ConvNeXt-B with its random init costs seconds that a checkpoint
    load would throw away.
    """
    check_backbone(backbone)
    with torch.device("meta"):
        return EmbeddingModel(backbone, BACKBONES[backbone][0](weights=None))


def uses_batch_statistics(backbone: str) -> bool:
    """Whether `backbone` normalises with statistics over the images passed together
    (BatchNorm: the ResNets), so that splitting a batch changes its outputs."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in empty_model(backbone).modules())


def load_state_strict(
    module: nn.Module, state: Mapping[str, torch.Tensor], source: str, *, assign: bool = False
) -> None:
    """module.load_state_dict(state) that fails loudly, never a silent partial load.

    assign: take the tensors of `state` as the module's own (for an empty_model).
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
    module.load_state_dict(state, strict=True, assign=assign)
    left = [n for n, t in (*module.named_parameters(), *module.named_buffers()) if t.is_meta]
    if left:  # a non-persistent buffer has no state-dict entry to fill it
        raise RuntimeError(f"{source}: tensors left unloaded on the meta device: {', '.join(left[:5])}")


__all__ = [
    "BACKBONES", "EmbeddingModel", "build_model", "check_backbone", "empty_model", "load_state_strict",
    "uses_batch_statistics",
]
