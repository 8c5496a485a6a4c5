"""Aggregation heads (s4g.model.heads): shapes at the papers' defaults, unit-length embeddings, and
small cases checked by hand (GeM p=1 is the mean, MixVPR without mixers is two projections,
SALAD's Sinkhorn marginals, the class token)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from s4g.errors import UserInputError
from s4g.model.encoder import build_model
from s4g.model.heads import (
    SALAD,
    ClassToken,
    Features,
    GeM,
    MixVPR,
    build_head,
    log_optimal_transport,
)

VIT = dict(depth=1, embed_dim=32, num_heads=2)


def _features(b: int = 2, c: int = 8, h: int = 3, w: int = 5, seed: int = 0) -> Features:
    gen = torch.Generator().manual_seed(seed)
    return Features(torch.randn(b, c, h, w, generator=gen), torch.randn(b, c, generator=gen))


def test_gem_with_p_1_is_the_mean_and_large_p_the_maximum():
    feats = _features()
    feats.grid = feats.grid.abs() + 0.1  # GeM clamps at eps: compare on positive maps
    mean = feats.grid.mean(dim=(-2, -1))
    torch.testing.assert_close(GeM(8, p=1.0)(feats), mean)
    torch.testing.assert_close(GeM(8, p=30.0)(feats), feats.grid.amax(dim=(-2, -1)), rtol=0.1, atol=0)
    # p = 3 by hand on one channel of four values
    grid = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)
    expected = ((1 + 8 + 27 + 64) / 4) ** (1 / 3)
    assert GeM(1)(Features(grid, None)).item() == pytest.approx(expected, rel=1e-6)
    assert GeM(8).p.requires_grad  # p is learned, as in the paper


def test_mixvpr_defaults_and_its_projections_by_hand():
    head = MixVPR(1024)  # the paper's ResNet-50 layer-3 setting: 1024 channels, 20x20
    assert head.out_dim == 2048 and len(head.mix) == 4
    out = head(Features(torch.randn(2, 1024, 20, 20), None))
    assert out.shape == (2, 2048)
    # Without mixer layers MixVPR is W_c X W_r^T (+ biases) on the channels x positions matrix.
    head = MixVPR(8, in_h=3, in_w=5, out_channels=6, mix_depth=0, out_rows=2)
    feats = _features()
    x = feats.grid.flatten(2)  # (B, C, n)
    cw, cb = head.channel_proj.weight, head.channel_proj.bias
    rw, rb = head.row_proj.weight, head.row_proj.bias
    by_hand = torch.einsum("oc,bcn,rn->bor", cw, x, rw) + cb[None, :, None] * rw.sum(1)[None, None, :] + rb
    torch.testing.assert_close(head(feats), by_hand.flatten(1))
    # another map size is pooled to the mixer's (a panorama and a tile share the head)
    assert head(_features(h=6, w=20)).shape == (2, 12)


def test_salad_sinkhorn_marginals_as_in_the_paper():
    # Columns (features) sum to 1 after every iteration; rows converge to 1 per cluster and
    # n - m for the dust bin.
    gen = torch.Generator().manual_seed(0)
    b, m, n = 2, 4, 10
    scores = torch.randn(b, m, n, generator=gen)
    dust = torch.tensor(1.0)
    plan = log_optimal_transport(scores, dust, iters=3).exp()
    assert plan.shape == (b, m + 1, n)
    torch.testing.assert_close(plan.sum(1), torch.ones(b, n))
    plan = log_optimal_transport(scores, dust, iters=500).exp()
    torch.testing.assert_close(plan.sum(2), torch.tensor([[1.0] * m + [n - m]] * b), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(plan.sum(1), torch.ones(b, n))


def test_salad_defaults_shapes_and_normalisation():
    head = SALAD(768).eval()  # DINOv2-B's width; 64 clusters x 128 + 256 token
    assert head.out_dim == 8448
    out = head(_features(c=768, h=10, w=10))
    assert out.shape == (2, 8448)
    token, clusters = out[:, :256], out[:, 256:].reshape(2, 128, 64)
    torch.testing.assert_close(token.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(clusters.norm(dim=1), torch.ones(2, 64))  # intra-normalised per cluster
    with pytest.raises(UserInputError, match="more than 64 feature positions"):
        head(_features(c=768, h=4, w=8))


def test_class_token_head_and_refusals():
    feats = _features()
    assert torch.equal(ClassToken(8)(feats), feats.cls)
    for name in ("cls", "salad"):
        with pytest.raises(UserInputError, match="class token"):
            build_head(name, 8, has_cls=False)
    with pytest.raises(UserInputError, match="--head-arg"):
        build_head("gem", 8, has_cls=False, args={"nonsense": 1})
    with pytest.raises(UserInputError, match="--head"):
        build_head("netvlad", 8, has_cls=True)


@pytest.mark.parametrize("head, args", [("pool", None), ("cls", None), ("gem", None),
                                        ("mixvpr", {"in_h": 2, "in_w": 4}),
                                        ("salad", {"num_clusters": 4, "cluster_dim": 8, "token_dim": 16})])
def test_every_head_gives_unit_embeddings_of_embed_dim(head, args):
    torch.manual_seed(0)
    model = build_model("timm/vit_small_patch14_reg4_dinov2", head=head, head_args=args, backbone_args=VIT).eval()
    out = model(torch.randn(3, 3, 28, 56))  # a 2x4-patch panorama
    assert out.shape == (3, model.embed_dim)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    if head == "cls":  # after the final norm, the register tokens skipped
        tokens = model.encoder.forward_features(torch.randn(1, 3, 28, 28))
        assert tokens.shape[1] == 1 + 4 + 4


def test_gem_head_on_a_convnext_takes_the_last_stage_map():
    torch.manual_seed(0)
    model = build_model("convnext_micro", head="gem", head_args={"p": 1.0}).eval()
    x = torch.randn(2, 3, 32, 64)
    grid = model.encoder.features(x).clamp(min=1e-6)
    torch.testing.assert_close(model(x), F.normalize(grid.mean(dim=(-2, -1)), dim=-1))
    assert not any(k.startswith("encoder.classifier") for k in model.state_dict())
