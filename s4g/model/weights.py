"""Where an encoder's weights come from: torchvision's downloads, local state dicts, and
ConvNeXt weights saved in timm's layout (the released Sample4Geo files).

Sample4Geo wraps `timm.create_model(name, num_classes=0)` in a module with a learned
`logit_scale`, so its files hold timm keys under a `model.` prefix (and `module.` when saved
from DataParallel), sometimes inside {"state_dict": ...}. s4g's encoder is torchvision's
ConvNeXt; the two compute the same function, only the parameter names (and the layer-scale
shape) differ. The key map below is explicit: a key it does not know is passed through under
its own name, so the strict load reports it as unexpected instead of silently dropping it.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from s4g.config import Preset
from s4g.errors import UserInputError
from s4g.fileio import file_sha256
from s4g.flags import Flag
from s4g.model.encoder import (
    BACKBONES,
    TIMM_PREFIX,
    EmbeddingModel,
    build_model,
    check_backbone,
    create_timm,
    empty_model,
    is_timm,
    load_state_strict,
)
from s4g.model.weightfile import load_weights_file

# timm keys with no counterpart in an embedding model: the ImageNet classifier (absent when
# num_classes=0) and Sample4Geo's InfoNCE temperature, which belongs to the loss in s4g.
IGNORED_KEYS = ("head.fc.weight", "head.fc.bias", "logit_scale")

# backbone -> (blocks per stage, channels per stage), torchvision's definitions.
CONVNEXT_ARCH: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "convnext_micro": ((1, 1, 2, 1), (24, 48, 96, 192)),
    "convnext_tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "convnext_small": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "convnext_base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "convnext_large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
}

_WRAPPERS = ("state_dict", "model_state_dict", "model", "module")
_PREFIXES = ("module.", "model.")
_BLOCK_PARTS = {"conv_dw": "block.0", "norm": "block.2", "mlp.fc1": "block.3", "mlp.fc2": "block.5"}
_STEM = re.compile(r"stem\.([01])\.(weight|bias)")
_DOWNSAMPLE = re.compile(r"stages\.([1-3])\.downsample\.([01])\.(weight|bias)")
_BLOCK = re.compile(r"stages\.([0-3])\.blocks\.(\d+)\.(conv_dw|norm|mlp\.fc1|mlp\.fc2)\.(weight|bias)")
_GAMMA = re.compile(r"stages\.([0-3])\.blocks\.(\d+)\.gamma")
_HEAD_NORM = re.compile(r"head\.norm\.(weight|bias)")


def unwrap_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The flat {key: tensor} of a saved model, without wrapper dicts or DataParallel prefixes.

    Accepts a plain state dict, one nested under "state_dict"/"model"/..., and keys prefixed
    by any mix of "module." and "model." (Sample4Geo: "model.stem.0.weight", "logit_scale").
    Raises UserInputError naming `source` when `obj` holds anything but tensors.
    """
    for _ in range(3):  # at most a couple of wrapper levels in practice
        if not isinstance(obj, Mapping):
            break
        inner = [k for k in _WRAPPERS if isinstance(obj.get(k), Mapping)]
        if not inner or any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        obj = obj[inner[0]]
    if not isinstance(obj, Mapping) or not obj:
        raise UserInputError(f"{source}: not a state dict (expected a mapping of names to tensors)")
    not_tensors = sorted(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise UserInputError(
            f"{source}: not a state dict; entries that are not tensors: {', '.join(not_tensors[:8])}"
        )
    flat: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        name = str(key)
        while name.startswith(_PREFIXES):
            name = name.split(".", 1)[1]
        if name in flat:
            raise UserInputError(f"{source}: key {key!r} collides with another after removing prefixes")
        flat[name] = value
    return flat


def is_timm_convnext(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether an unwrapped state dict looks like a timm ConvNeXt (has its stem and stages)."""
    return "stem.0.weight" in state and any(k.startswith("stages.0.blocks.") for k in state)


def convnext_arch(state: Mapping[str, torch.Tensor]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(blocks per stage, channels per stage) read from a timm ConvNeXt state dict."""
    depths, dims = [], []
    for stage in range(4):
        blocks = {
            int(m.group(2))
            for k in state
            if (m := re.match(rf"stages\.({stage})\.blocks\.(\d+)\.", k))
        }
        depths.append(len(blocks))
        dw = state.get(f"stages.{stage}.blocks.0.conv_dw.weight")
        dims.append(int(dw.shape[0]) if dw is not None else 0)
    return tuple(depths), tuple(dims)


def infer_convnext_backbone(state: Mapping[str, torch.Tensor], source: str) -> str:
    """The s4g backbone name whose depths and widths match a timm ConvNeXt state dict."""
    arch = convnext_arch(state)
    for name, known in CONVNEXT_ARCH.items():
        if known == arch:
            return name
    raise UserInputError(
        f"{source}: a ConvNeXt with blocks per stage {arch[0]} and widths {arch[1]} matches no "
        f"s4g backbone ({', '.join(f'{n} {a[0]}/{a[1]}' for n, a in CONVNEXT_ARCH.items())})"
    )


def _map_key(key: str, value: torch.Tensor) -> tuple[str, torch.Tensor] | None:
    """torchvision name and tensor for one timm key; None when the key is not a mapped one."""
    if m := _STEM.fullmatch(key):
        return f"features.0.{m.group(1)}.{m.group(2)}", value
    if m := _DOWNSAMPLE.fullmatch(key):
        return f"features.{2 * int(m.group(1))}.{m.group(2)}.{m.group(3)}", value
    if m := _BLOCK.fullmatch(key):
        stage, block, part, kind = m.groups()
        if part.startswith("mlp.") and kind == "weight" and value.dim() == 4:
            # timm's conv_mlp variant stores the pointwise layers as 1x1 convolutions.
            value = value.flatten(1)
        return f"features.{2 * int(stage) + 1}.{block}.{_BLOCK_PARTS[part]}.{kind}", value
    if m := _GAMMA.fullmatch(key):
        # timm scales the channels-last activation with a (C,) vector; torchvision scales the
        # channels-first tensor with (C, 1, 1).
        return f"features.{2 * int(m.group(1)) + 1}.{m.group(2)}.layer_scale", value.reshape(-1, 1, 1)
    if m := _HEAD_NORM.fullmatch(key):
        return f"classifier.0.{m.group(1)}", value
    return None


def timm_to_torchvision(
    state: Mapping[str, torch.Tensor], source: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(torchvision ConvNeXt state dict without the classifier Linear, ignored timm keys).

    `state` is an unwrapped timm ConvNeXt state dict. Keys outside the map keep their timm
    name, so a strict load lists them as unexpected.
    """
    if any(k.startswith("norm_pre.") for k in state):
        raise UserInputError(
            f"{source}: this timm ConvNeXt normalises before pooling (norm_pre, head_norm_first); "
            "torchvision's ConvNeXt pools first, so the weights cannot be imported"
        )
    mapped: dict[str, torch.Tensor] = {}
    ignored = []
    for key, value in state.items():
        if key in IGNORED_KEYS:
            ignored.append(key)
            continue
        name, tensor = _map_key(key, value) or (key, value)
        mapped[name] = tensor.detach().clone().float()
    return mapped, ignored


def check_convnext_backbone(backbone: str) -> None:
    """UserInputError unless `backbone` is an s4g ConvNeXt that timm weights can fill."""
    if backbone not in BACKBONES:
        raise UserInputError(f"unknown backbone {backbone!r}; choose one of: {', '.join(CONVNEXT_ARCH)}")
    if backbone not in CONVNEXT_ARCH:
        raise UserInputError(
            f"{Flag.BACKBONE} {backbone}: timm weights import only into {', '.join(CONVNEXT_ARCH)}"
        )


def load_timm_weights(obj: Any, source: str, backbone: str | None = None):
    """(EmbeddingModel in eval mode, backbone name, ignored keys) from a timm ConvNeXt file's content.

    backbone: expected s4g backbone; None infers it from the depths and widths.
    Raises UserInputError naming `source` and listing missing/unexpected/mis-shaped keys.
    """
    if backbone is not None:
        check_convnext_backbone(backbone)
    state = unwrap_state_dict(obj, source)
    if not is_timm_convnext(state):
        shown = ", ".join(list(state)[:6])
        raise UserInputError(
            f"{source}: not a timm ConvNeXt state dict (no 'stem.0.weight' / 'stages.0.blocks.*' "
            f"keys; first keys: {shown})"
        )
    inferred = infer_convnext_backbone(state, source) if backbone is None else backbone
    mapped, ignored = timm_to_torchvision(state, source)
    model = empty_model(inferred)
    load_state_strict(model.encoder, mapped, source=f"{source} (as {inferred})", assign=True)
    return model.eval(), inferred, ignored


def imported_config(
    backbone: str,
    source: str | os.PathLike,
    *,
    preset: Preset | None = None,
    dataset: str | None = None,
    aerial_size: int | None = None,
    ground_size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """The run config stored with imported weights: backbone and image sizes.

    Sizes come from `preset` (the paper's, which is CVUSA's: 384 and 140x768, when None), then
    from the explicit sizes; `dataset`, when given, is recorded as the run's dataset.
    "imported_from" records the source file and its SHA-256.
    """
    preset = preset or Preset()
    config: dict[str, Any] = {
        "backbone": backbone,
        "aerial_size": int(aerial_size or preset.aerial_size),
        "ground_size": [int(v) for v in (ground_size or preset.ground_size)],
        "batch_size": preset.batch_size,
        "eval_split": preset.eval_split,
        "imported_from": {"path": str(Path(source).resolve()), "sha256": file_sha256(source)},
    }
    if dataset is not None:
        config["dataset"] = dataset
    return config


# The paper's starting point for each ConvNeXt size: ImageNet-22k pre-training, fine-tuned on
# ImageNet-1k at 384 px (every released Sample4Geo training script starts from the base one).
TIMM_WEIGHTS = {name: f"{name}.fb_in22k_ft_in1k_384" for name in ("convnext_tiny", "convnext_small",
                                                                  "convnext_base", "convnext_large")}
PRETRAINED_FROM = ("timm", "torchvision")


def _timm_state_dict(backbone: str) -> dict[str, torch.Tensor]:
    """The timm checkpoint of TIMM_WEIGHTS[backbone], fetched (or read from its cache) by timm."""
    name = TIMM_WEIGHTS[backbone]
    by_hand = (f"download {name} (model.safetensors from the Hugging Face repository timm/{name}) and "
               f"pass it with {Flag.WEIGHTS} FILE")
    try:
        import timm  # the optional extra s4g[timm]: only this way of getting weights needs it
    except ImportError:
        raise UserInputError(
            f"{Flag.PRETRAINED} for {backbone} starts from timm's {name}, the paper's weights: install the extra "
            f'(pip install "s4g[timm]") so timm can fetch them, or {by_hand}'
        ) from None
    if not _hub_reachable():
        # offline: the hub client would retry for about a minute before it gives up; it
        # reads its own cache only, at once
        os.environ["HF_HUB_OFFLINE"] = "1"
        hub: Any = sys.modules.get("huggingface_hub.constants")  # an optional package's module
        if hub is not None:
            hub.HF_HUB_OFFLINE = True
    try:
        return timm.create_model(name, pretrained=True, num_classes=0).state_dict()
    except Exception as err:  # hub and network failures come in many types
        raise UserInputError(f"timm could not fetch {name} ({type(err).__name__}: {err}); {by_hand}") from err


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection within `timeout_s` (assumed
    so behind a proxy, which only the hub client knows how to use)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    host = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def _encoder_state(state: Mapping[str, torch.Tensor], source: str,
                   own: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """A torchvision-layout encoder state dict from a torchvision or a timm ConvNeXt one,
    without the ImageNet classifier (nor the pooling norm when `own`, the encoder's state
    dict, has none: a head replaces it)."""
    if is_timm_convnext(state):
        state, _ = timm_to_torchvision(state, source)
    head: tuple[str, ...] = ("classifier.2.", "fc.")  # the ImageNet classifier the embedding model drops
    if own is not None and not any(k.startswith("classifier.") for k in own):
        head = (*head, "classifier.")
    return {k: v for k, v in state.items() if not k.startswith(head)}


def _timm_encoder(backbone: str, args: Mapping[str, Any], pretrained: bool,
                  weights_file: str | os.PathLike | None) -> torch.nn.Module:
    """timm's model for `backbone` (without classifier): from `weights_file` (timm's own
    state dict of that model, loaded strictly), timm's download (`pretrained`), or random."""
    if weights_file is not None:
        encoder = create_timm(backbone, args)
        state = unwrap_state_dict(load_weights_file(weights_file), str(weights_file))
        # the ImageNet classifier, absent with num_classes=0
        state = {k: v for k, v in state.items() if not k.startswith("head.") or k in encoder.state_dict()}
        load_state_strict(encoder, state, source=str(weights_file))
        return encoder
    if not pretrained:
        return create_timm(backbone, args)
    try:
        return create_timm(backbone, args, pretrained=True)
    except UserInputError:
        raise
    except Exception as err:  # hub and network failures come in many types; re-raised below
        name = backbone[len(TIMM_PREFIX):]
        raise UserInputError(
            f"timm could not fetch the weights of {name} ({type(err).__name__}: {err}); download its "
            f"model.safetensors from the Hugging Face hub (timm/<name with its tag>) and pass it with {Flag.WEIGHTS} "
            f"FILE, or train from random initialisation with {Flag.NO_PRETRAINED}"
        ) from err


def initial_model(
    backbone: str,
    *,
    pretrained: bool = False,
    pretrained_from: str = "timm",
    weights_file: str | os.PathLike | None = None,
    head: str = "pool",
    head_args: Mapping[str, Any] | None = None,
    lora_rank: int = 0,
    backbone_args: Mapping[str, Any] | None = None,
) -> EmbeddingModel:
    """The encoder a training run starts from.

    weights_file: a local state dict of the same backbone (torchvision's layout, or timm's —
      e.g. a downloaded convnext_base.fb_in22k_ft_in1k_384 — as .safetensors or a PyTorch
      file; for a timm/<name> backbone timm's state dict of that model); the classifier is
      ignored, everything else loads strictly. Wins over pretrained.
    pretrained: start from downloaded ImageNet weights; pretrained_from "timm" = the paper's
      (TIMM_WEIGHTS, via the optional timm package; a timm/<name> backbone: timm's default
      weights of that model), "torchvision" = torchvision's ImageNet-1k weights at 224 px.
      Otherwise the backbone is randomly initialised.
    head, head_args, lora_rank, backbone_args: as s4g.model.encoder.build_model; the head and the LoRA
      matrices start from their own initialisation.
    """
    if pretrained_from not in PRETRAINED_FROM:
        raise UserInputError(f"{Flag.PRETRAINED_FROM} {pretrained_from!r}: choose one of {', '.join(PRETRAINED_FROM)}")
    arch: dict[str, Any] = dict(head=head, head_args=head_args, lora_rank=lora_rank, backbone_args=backbone_args)
    if is_timm(backbone):
        check_backbone(backbone)
        encoder = _timm_encoder(backbone, backbone_args or {}, pretrained, weights_file)
        return EmbeddingModel(backbone, encoder, head, head_args, lora_rank, backbone_args)
    if weights_file is not None:
        model = build_model(backbone, **arch)
        loaded = load_weights_file(weights_file)
        if isinstance(loaded, Mapping) and loaded.get("format") == "s4g-checkpoint":  # checkpoint.CHECKPOINT_FORMAT
            raise UserInputError(
                f"{Flag.WEIGHTS} {weights_file} is an s4g checkpoint (a {loaded.get('backbone')} run's, epoch "
                f"{loaded.get('epoch', '?')}), not backbone weights: continue its run with {Flag.RESUME} "
                f"{weights_file}, "
                f"or evaluate it with s4g eval {Flag.CHECKPOINT}; {Flag.WEIGHTS} takes ImageNet backbone weights in "
                "torchvision's or timm's layout")
        state = unwrap_state_dict(loaded, str(weights_file))
        own = model.encoder.state_dict()
        load_state_strict(model.encoder, _encoder_state(state, str(weights_file), own), source=str(weights_file))
        return model
    if not pretrained:
        return build_model(backbone, **arch)
    if pretrained_from == "timm":
        if backbone not in TIMM_WEIGHTS:
            raise UserInputError(
                f"{Flag.BACKBONE} {backbone} has no timm weights s4g can import (ConvNeXt tiny to large do); "
                f"pass {Flag.PRETRAINED_FROM} torchvision, or {Flag.NO_PRETRAINED}"
            )
        model = build_model(backbone, **arch)
        state = _encoder_state(_timm_state_dict(backbone), TIMM_WEIGHTS[backbone], model.encoder.state_dict())
        load_state_strict(model.encoder, state, source=f"timm's {TIMM_WEIGHTS[backbone]}")
        return model
    _, weights_enum = BACKBONES.get(backbone, (None, None))
    if weights_enum is None:
        raise UserInputError(f"{Flag.BACKBONE} {backbone} has no pretrained weights; pass {Flag.NO_PRETRAINED}")
    try:
        return build_model(backbone, weights_enum.DEFAULT, **arch)
    except (OSError, RuntimeError) as err:  # torchvision's download failed
        raise UserInputError(
            f"torchvision could not fetch the ImageNet weights of {backbone} ({err}); on a machine without "
            f"internet access pass a local state dict with {Flag.WEIGHTS} FILE"
        ) from err


__all__ = [
    "CONVNEXT_ARCH", "PRETRAINED_FROM", "TIMM_WEIGHTS", "check_convnext_backbone", "imported_config",
    "infer_convnext_backbone", "initial_model", "load_timm_weights", "timm_to_torchvision", "unwrap_state_dict",
]
