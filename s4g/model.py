"""The siamese encoder: one torchvision backbone for both views → pooled, L2-normalised embedding.

Checkpoints are plain dicts of tensors and JSON-like values, so they load with
`torch.load(..., weights_only=True)`; the model's state dict keeps torchvision's key names
under the `encoder.` prefix.
"""

from __future__ import annotations

import os
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
    # near-identities barely move in the ~200 steps of the synthetic default (R@1 15 % vs 30 %
    # after 100 steps on the synthetic world).
    return _convnext_micro(layer_scale=1.0)


# name -> (builder, weights enum or None). Builders take torchvision's keyword-only `weights`.
BACKBONES: dict[str, tuple[Callable[..., nn.Module], Any]] = {
    "convnext_micro": (_convnext_micro, None),
    "convnext_micro_ls1": (_convnext_micro_ls1, None),
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


def empty_model(backbone: str) -> EmbeddingModel:
    """An EmbeddingModel whose tensors are on the meta device: no memory, no random init.

    Only for filling at once with load_state_strict(..., assign=True); building a
    ConvNeXt-B with its random init costs seconds that a checkpoint load would throw away.
    """
    _check_backbone(backbone)
    with torch.device("meta"):
        return EmbeddingModel(backbone, BACKBONES[backbone][0](weights=None))


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


def _torch_load(path: str | os.PathLike) -> Any:
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
    """(model on CPU in eval mode, run config dict) from an s4g checkpoint, loaded strictly.

    A file that is not an s4g checkpoint but a timm-layout ConvNeXt state dict (a released
    Sample4Geo model) is converted on the fly; its config holds the backbone and CVUSA's sizes.
    """
    obj = _torch_load(path)
    if not (isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT):
        from s4g.weights import imported_config, load_timm_weights

        try:
            model, backbone, _ = load_timm_weights(obj, str(path))
        except UserInputError as err:
            raise UserInputError(
                f"{path}: neither an s4g checkpoint (no '{CHECKPOINT_FORMAT}' marker) nor "
                f"importable timm ConvNeXt weights: {err}"
            ) from err
        return model, imported_config(backbone, path)
    ckpt = obj
    backbone = ckpt.get("backbone")
    _check_backbone(str(backbone))
    model = empty_model(backbone)
    load_state_strict(model, ckpt["model"], source=str(path), assign=True)
    return model.eval(), dict(ckpt.get("config", {}))
