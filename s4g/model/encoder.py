"""The siamese encoder: one backbone for both views → aggregation head → L2-normalised embedding.

Backbones are torchvision's ConvNeXts and ResNets (BACKBONES) or any timm image model named
"timm/<model name>" (the optional timm extra), built with timm's dynamic image size so that
a ViT takes panoramas and square tiles alike. The state dict keeps the backbone's own key
names under the `encoder.` prefix, and a head's under `head.`. `EmbeddingModel.architecture`
is what a checkpoint records to rebuild the model. Where the initial weights come from is
s4g.model.weights; how trained ones are stored is s4g.model.checkpoint.
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
from s4g.flags import Flag
from s4g.model.heads import HEADS, Features, build_head
from s4g.model.lora import add_lora


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


TIMM_PREFIX = "timm/"


def is_timm(backbone: str) -> bool:
    """Whether `backbone` names a timm model ("timm/<model name>")."""
    return backbone.startswith(TIMM_PREFIX)


def _import_timm():
    try:
        import timm  # the optional extra s4g[timm]
    except ImportError:
        raise UserInputError(f'{Flag.BACKBONE} timm/...: install the extra (pip install "s4g[timm]")') from None
    return timm


def check_backbone(name: str) -> None:
    """UserInputError unless `name` is an s4g backbone or a model timm knows."""
    if is_timm(name):
        model = name[len(TIMM_PREFIX):]
        timm = _import_timm()
        # a pretrained tag ("vit_base_patch14_dinov2.lvd142m") picks timm's weights of the model
        if not timm.models.is_model(timm.models.split_model_name_tag(model)[0]):
            raise UserInputError(f"{Flag.BACKBONE} {name}: timm has no model {model!r} (timm.list_models() lists them)")
        return
    if name not in BACKBONES:
        raise UserInputError(
            f"{Flag.BACKBONE} {name!r}: choose one of {', '.join(sorted(BACKBONES))}, or timm/<model name>"
        )


def create_timm(backbone: str, args: Mapping[str, Any] | None = None, *, pretrained: bool = False) -> nn.Module:
    """timm's model for "timm/<name>" without its classifier (num_classes=0); a ViT with a
    dynamic image size (position embeddings interpolated to each input's grid).
    args: keyword arguments for timm.create_model (depth=2, embed_dim=96, ...)."""
    timm = _import_timm()
    name = backbone[len(TIMM_PREFIX):]
    kwargs = {"num_classes": 0, **dict(args or {})}
    try:
        try:
            return timm.create_model(name, pretrained=pretrained, dynamic_img_size=True, **kwargs)
        except TypeError as err:
            if "dynamic_img_size" not in str(err):
                raise
            return timm.create_model(name, pretrained=pretrained, **kwargs)  # a CNN: any size works
    except TypeError as err:
        raise UserInputError(f"{Flag.BACKBONE_ARG} for {backbone}: {err}") from None


def _encoder(backbone: str, backbone_args: Mapping[str, Any] | None, weights: Any = None) -> nn.Module:
    if is_timm(backbone):
        return create_timm(backbone, backbone_args)
    if backbone_args:
        raise UserInputError(f"{Flag.BACKBONE_ARG} applies to timm backbones, not {backbone}")
    return BACKBONES[backbone][0](weights=weights)


class EmbeddingModel(nn.Module):
    """Shared encoder for ground and aerial images.

    forward(x): x (B, 3, H, W) float, ImageNet-normalised, any H and W the backbone accepts
    (multiples of the patch size for a ViT) -> (B, D) float32, L2-normalised. D is
    `embed_dim` (1024 for convnext_base with the "pool" head).

    head: "pool" (the backbone's own pooling: ConvNeXt's average pool + LayerNorm, a timm
    model's global_pool), or one of s4g.model.heads.HEADS with head_args overriding its defaults.
    lora_rank > 0 adds LoRA to the attention projections (s4g.model.lora).
    """

    def __init__(self, backbone: str, encoder: nn.Module, head: str = "pool",
                 head_args: Mapping[str, Any] | None = None, lora_rank: int = 0,
                 backbone_args: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.encoder = encoder
        self.head_name = head
        self.head_args = dict(head_args or {})
        self.backbone_args = dict(backbone_args or {})
        self.lora_rank = int(lora_rank)
        self.family = "timm" if is_timm(backbone) else "convnext" if isinstance(encoder, ConvNeXt) else "resnet"
        # Drop the classification layer: global average pool (+ ConvNeXt's final LayerNorm)
        # is the embedding, as in Sample4Geo.
        if isinstance(encoder, ConvNeXt):
            channels = encoder.classifier[-1].in_features
            encoder.classifier[-1] = nn.Identity()
        elif isinstance(encoder, tvm.ResNet):
            channels = encoder.fc.in_features
            encoder.fc = nn.Identity()
        elif self.family == "timm":
            channels = encoder.num_features
        else:  # pragma: no cover - BACKBONES only lists the two families above
            raise TypeError(f"unsupported encoder type {type(encoder).__name__}")
        if head not in HEADS:
            raise UserInputError(f"{Flag.HEAD} {head!r}: choose one of {', '.join(HEADS)}")
        if self.lora_rank < 0:
            raise UserInputError(f"{Flag.LORA_RANK} must be 0 (off) or more, got {lora_rank}")
        if self.lora_rank and add_lora(encoder, self.lora_rank) == 0:
            raise UserInputError(f"{Flag.LORA_RANK}: {backbone} has no attention layers to adapt; use a transformer "
                                 "backbone (timm/vit_*)")
        if head == "pool":
            self.head = None
            self.embed_dim = channels
        else:
            if self.family != "timm":  # the head takes the map before the pool and its norm
                encoder.avgpool = nn.Identity()
                if self.family == "convnext":
                    encoder.classifier = nn.Identity()
            has_cls = self.family == "timm" and getattr(encoder, "cls_token", None) is not None
            self.head = build_head(head, channels, has_cls, self.head_args)
            self.embed_dim = self.head.out_dim

    def architecture(self) -> dict[str, Any]:
        """What rebuilds this model with empty_model(**architecture()): JSON-like values."""
        return {"backbone": self.backbone, "backbone_args": dict(self.backbone_args), "head": self.head_name,
                "head_args": dict(self.head_args), "lora_rank": self.lora_rank}

    @property
    def patch_size(self) -> int | None:
        """The side in pixels that input sizes must be a multiple of (a ViT's patch), or None."""
        embed = getattr(self.encoder, "patch_embed", None)
        size = getattr(embed, "patch_size", None)
        if size is None:
            return None
        return int(size[0]) if isinstance(size, (tuple, list)) else int(size)

    def check_image_size(self, h: int, w: int, option: str) -> None:
        """UserInputError naming `option` unless (h, w) pixels are multiples of the patch size."""
        p = self.patch_size
        if p is None or (h % p == 0 and w % p == 0):
            return

        def nearest(v: int) -> str:
            lo, hi = v // p * p, (v // p + 1) * p
            return str(v) if v % p == 0 else (f"{lo} or {hi}" if lo > 0 else str(hi))

        raise UserInputError(
            f"{option}: {h}x{w} pixels, but {self.backbone} cuts images into {p}x{p} patches, so both sides "
            f"must be multiples of {p}; the nearest valid sizes are {nearest(h)} (height) and {nearest(w)} (width)"
        )

    def features(self, x: torch.Tensor) -> Features:
        """The backbone's local features (B, C, h, w) and class token (B, C) or None."""
        enc: Any = self.encoder  # torchvision's or timm's module, whose layers differ by family
        if self.family == "convnext":
            return Features(enc.features(x), None)
        if self.family == "resnet":
            x = enc.maxpool(enc.relu(enc.bn1(enc.conv1(x))))
            return Features(enc.layer4(enc.layer3(enc.layer2(enc.layer1(x)))), None)
        out = enc.forward_features(x)
        if out.dim() == 4:  # a timm CNN
            return Features(out, None)
        prefix = int(getattr(enc, "num_prefix_tokens", 0))
        p = self.patch_size
        assert p is not None  # a timm model whose features are tokens has a patch embedding
        grid = out[:, prefix:].transpose(1, 2).reshape(out.shape[0], out.shape[2], x.shape[-2] // p, x.shape[-1] // p)
        cls = out[:, 0] if getattr(enc, "cls_token", None) is not None else None
        return Features(grid, cls)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.family == "timm":  # a ViT's patch embedding would silently crop the remainder
            self.check_image_size(x.shape[-2], x.shape[-1], "the image size")
        if self.head is not None:
            return F.normalize(self.head(self.features(x)).float(), dim=-1)
        if self.family == "timm":
            enc: Any = self.encoder  # timm's model: forward_head is its API, not nn.Module's
            return F.normalize(enc.forward_head(enc.forward_features(x), pre_logits=True).float(), dim=-1)
        return F.normalize(self.encoder(x).float(), dim=-1)


def build_model(backbone: str = "convnext_base", weights: Any = None, *, head: str = "pool",
                head_args: Mapping[str, Any] | None = None, lora_rank: int = 0,
                backbone_args: Mapping[str, Any] | None = None) -> EmbeddingModel:
    """A fresh EmbeddingModel: random initialisation, or torchvision's `weights` enum entry
    (downloaded by torchvision; s4g.model.weights.initial_model chooses and reports failures)."""
    check_backbone(backbone)
    return EmbeddingModel(backbone, _encoder(backbone, backbone_args, weights), head, head_args, lora_rank,
                          backbone_args)


def empty_model(backbone: str, *, head: str = "pool", head_args: Mapping[str, Any] | None = None,
                lora_rank: int = 0, backbone_args: Mapping[str, Any] | None = None) -> EmbeddingModel:
    """An EmbeddingModel to fill at once with load_state_strict(..., assign=True).

    A torchvision backbone's tensors are on the meta device: no memory, no random init
    (building a ConvNeXt-B with its random init costs seconds that a checkpoint load would
    throw away). A timm model is built on the CPU: some compute buffers at construction that
    no state dict holds (DINOv3's rotary-embedding periods).
    """
    check_backbone(backbone)
    if is_timm(backbone):
        return build_model(backbone, head=head, head_args=head_args, lora_rank=lora_rank,
                           backbone_args=backbone_args)
    with torch.device("meta"):
        return build_model(backbone, head=head, head_args=head_args, lora_rank=lora_rank,
                           backbone_args=backbone_args)


def uses_batch_statistics(backbone: str, backbone_args: Mapping[str, Any] | None = None) -> bool:
    """Whether `backbone` normalises with statistics over the images passed together
    (BatchNorm: the ResNets), so that splitting a batch changes its outputs."""
    check_backbone(backbone)
    with torch.device("meta"):
        encoder = _encoder(backbone, backbone_args)
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in encoder.modules())


def block_groups(model: EmbeddingModel) -> list[list[nn.Module]]:
    """The backbone's units that --train-blocks counts from the end: a ViT's transformer
    blocks, a ConvNeXt's stages (each with the downsampling layer before it)."""
    enc: Any = model.encoder  # torchvision's or timm's module, whose layers differ by family
    if model.family == "convnext":
        return [[enc.features[i], enc.features[i + 1]] for i in range(0, len(enc.features), 2)]
    blocks = getattr(enc, "blocks", None) if model.family == "timm" else None
    if blocks is None:
        raise UserInputError(f"{Flag.TRAIN_BLOCKS}: {model.backbone} has no transformer blocks or ConvNeXt stages "
                             "s4g can count; train it whole")
    return [[b] for b in blocks]


def set_trainable(model: EmbeddingModel, train_blocks: int | None) -> None:
    """Freeze the backbone but for its last `train_blocks` units (block_groups) and what
    follows them (final norm, pooling); the head and LoRA matrices always train.

    train_blocks None with lora_rank 0: everything trains. Frozen parameters get
    requires_grad False, so the frozen front of the network builds no autograd state.
    """
    if train_blocks is None and model.lora_rank == 0:
        return
    groups = block_groups(model) if train_blocks is not None else []
    if train_blocks is not None and not 0 <= train_blocks <= len(groups):
        raise UserInputError(f"{Flag.TRAIN_BLOCKS} {train_blocks}: {model.backbone} has {len(groups)} blocks; "
                             f"choose 0 to {len(groups)}")
    model.encoder.requires_grad_(False)
    if train_blocks is not None:
        for group in groups[len(groups) - train_blocks:]:
            for module in group:
                module.requires_grad_(True)
        enc = model.encoder
        tail = ([getattr(enc, "norm", None), getattr(enc, "fc_norm", None)] if model.family == "timm"
                else [getattr(enc, "classifier", None)])
        for end in tail:
            if isinstance(end, nn.Module):
                end.requires_grad_(True)
    for name, param in model.encoder.named_parameters():
        if ".lora_" in name:
            param.requires_grad_(True)


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
    "BACKBONES", "TIMM_PREFIX", "EmbeddingModel", "block_groups", "build_model", "check_backbone", "create_timm",
    "empty_model", "is_timm", "load_state_strict", "set_trainable", "uses_batch_statistics",
]
