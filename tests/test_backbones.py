"""timm backbones (DINOv2 with and without registers, DINOv3), --weights, size checks,
partial fine-tuning and LoRA, checkpoints that rebuild the model, and training runs with
them on a tiny synthetic world (random init, a DINOv2-S-shaped ViT cut to 2 blocks of
width 32, so that a run takes seconds)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from typer.testing import CliRunner

from s4g.app.cli import app
from s4g.app.jobs.train.step import Parts, TrainStep, batch_gradients, param_groups
from s4g.app.synth.cache import ensure_world
from s4g.app.synth.writer import write_layout
from s4g.data import registry as datasets
from s4g.errors import UserInputError
from s4g.model.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from s4g.model.encoder import build_model, create_timm, set_trainable
from s4g.model.loss import InfoNCE
from s4g.model.weights import initial_model

DINOV2 = "timm/vit_small_patch14_dinov2"
VIT = dict(depth=2, embed_dim=32, num_heads=2)
VIT_ARGS = ["--backbone", DINOV2, "--backbone-arg", "depth=2", "--backbone-arg", "embed_dim=32",
            "--backbone-arg", "num_heads=2", "--no-pretrained"]
TINY_ARGS = ["--locations", "32", "--aerial-size", "28", "--ground-size", "28", "56", "--batch-size", "8",
             "--eval-batch-size", "32", "--log-every", "2", "--workers", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return ensure_world(tmp_path_factory.mktemp("synth") / "world", locations=32, seed=0)


@pytest.mark.parametrize("name, kwargs, fmt", [
    ("vit_small_patch14_dinov2", dict(depth=2), "safetensors"),
    ("vit_small_patch14_reg4_dinov2", dict(depth=2), "pth"),
    ("vit_small_patch16_dinov3", dict(depth=2), "safetensors"),
])
def test_timm_forward_and_s4g_embedding_agree(tmp_path, name, kwargs, fmt):
    # Weights written locally in timm's own layout (with its ImageNet classifier, as timm's
    # files hold it) and read back through --weights, at a rectangular panorama size.
    torch.manual_seed(0)
    reference = create_timm(f"timm/{name}", {**kwargs, "num_classes": 10}).eval()
    path = tmp_path / f"weights.{fmt}"
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    save_file(state, path) if fmt == "safetensors" else torch.save(state, path)
    model = initial_model(f"timm/{name}", weights_file=path, backbone_args=kwargs).eval()
    p = model.patch_size
    x = torch.randn(2, 3, 2 * p, 7 * p)
    with torch.no_grad():
        expected = F.normalize(reference.forward_head(reference.forward_features(x), pre_logits=True), dim=-1)
        torch.testing.assert_close(model(x), expected, atol=1e-4, rtol=0)
    assert all(getattr(b.attn, "fused_attn", False) for b in model.encoder.blocks)  # SDPA


def test_weights_load_strictly(tmp_path):
    state = create_timm(DINOV2, VIT).state_dict()
    del state["norm.weight"]
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    with pytest.raises(UserInputError, match="missing keys: norm.weight"):
        initial_model(DINOV2, weights_file=tmp_path / "w.safetensors", backbone_args=VIT)
    with pytest.raises(UserInputError, match="wrong shape"):  # another model's weights
        initial_model(DINOV2, weights_file=tmp_path / "w.safetensors", backbone_args={**VIT, "embed_dim": 48})


def test_sizes_are_checked_against_the_patch():
    model = build_model(DINOV2, backbone_args=VIT)
    model.check_image_size(28, 56, "--ground-size")
    nearest = r"--ground-size: 30x64.*multiples of 14.*28 or 42 \(height\) and 56 or 70"
    with pytest.raises(UserInputError, match=nearest):
        model.check_image_size(30, 64, "--ground-size")
    with pytest.raises(UserInputError, match="the image size"):
        model(torch.randn(1, 3, 28, 50))
    build_model("convnext_micro").check_image_size(30, 61, "--ground-size")  # a CNN takes any size


def test_unknown_backbones_and_misplaced_options():
    for bad, match in (("timm/no_such_model", "timm has no model"), ("vgg99", "choose one of")):
        with pytest.raises(UserInputError, match=match):
            build_model(bad)
    with pytest.raises(UserInputError, match="no attention layers"):
        build_model("convnext_micro", lora_rank=4)
    with pytest.raises(UserInputError, match="--backbone-arg applies to timm"):
        build_model("convnext_micro", backbone_args={"depth": 2})
    with pytest.raises(UserInputError, match="has 2 blocks"):
        set_trainable(build_model(DINOV2, backbone_args=VIT), 3)


def test_lora_starts_as_the_plain_model_and_trains_only_its_matrices():
    torch.manual_seed(0)
    plain = build_model(DINOV2, backbone_args=VIT).eval()
    lora = build_model(DINOV2, backbone_args=VIT, lora_rank=4).eval()
    state = {k.replace(".base.", "."): v for k, v in lora.state_dict().items() if ".lora_" not in k}
    plain.load_state_dict(state)
    x = torch.randn(2, 3, 28, 56)
    with torch.no_grad():
        torch.testing.assert_close(lora(x), plain(x))  # B starts at zero
    set_trainable(lora, None)
    trained = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert trained and all(".lora_" in n for n in trained)
    assert len(trained) == 2 * 2 * 2  # A and B on qkv and proj of both blocks


def test_frozen_front_builds_no_autograd_state():
    model = build_model(DINOV2, backbone_args=VIT, head="gem")
    set_trainable(model, 1)
    seen = {}
    model.encoder.blocks[0].register_forward_hook(lambda m, i, o: seen.update(first=o.grad_fn))
    model.encoder.blocks[1].register_forward_hook(lambda m, i, o: seen.update(last=o.grad_fn))
    model(torch.randn(2, 3, 28, 56))
    assert seen["first"] is None and seen["last"] is not None
    trained = {n.split(".")[0] + "." + n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {"encoder.blocks", "encoder.norm", "head.p"}


def _gradients(model, chunk, ground, aerial):
    loss_fn = InfoNCE()
    groups = param_groups(model, loss_fn)
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    parts = Parts(model, loss_fn, optimizer, scaler, contextlib.nullcontext, TrainStep(model, loss_fn), chunk=chunk)
    params = [p for g in groups for p in g["params"]]
    optimizer.zero_grad(set_to_none=True)
    batch_gradients(parts, ground, aerial, params)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("train_blocks, lora, head", [(None, 0, "salad"), (1, 0, "mixvpr"), (None, 4, "gem")])
def test_chunked_step_gives_the_whole_batch_gradients(train_blocks, lora, head):
    # The chunked tests' tolerance (tests/test_chunked.py): 2e-5 of each tensor's largest entry.
    args = {"salad": {"num_clusters": 4, "cluster_dim": 8, "token_dim": 8, "dropout": 0.0},
            "mixvpr": {"in_h": 2, "in_w": 2}}.get(head)
    torch.manual_seed(0)
    model = build_model(DINOV2, backbone_args=VIT, head=head, head_args=args, lora_rank=lora).train()
    set_trainable(model, train_blocks)
    gen = torch.Generator().manual_seed(1)
    ground, aerial = torch.randn(10, 3, 28, 70, generator=gen), torch.randn(10, 3, 42, 42, generator=gen)
    whole, chunked = _gradients(model, None, ground, aerial), _gradients(model, 4, ground, aerial)
    assert whole.keys() == chunked.keys()
    largest = max(float(g.abs().max()) for g in whole.values())
    for name, ref in whole.items():
        if (lora and name.endswith("lora_a")) or name == "head.score.3.bias":
            # B starts at zero, so A's first gradient is zero; Sinkhorn normalises away a
            # per-cluster score offset, so that bias's gradient is zero up to rounding.
            assert float(ref.abs().max()) < 1e-6 * largest, name
            continue
        assert ref.abs().max() > 0, name
        torch.testing.assert_close(chunked[name], ref, rtol=1e-4, atol=2e-5 * float(ref.abs().max()))


def test_checkpoint_records_and_rebuilds_the_architecture(tmp_path):
    torch.manual_seed(0)
    model = build_model(DINOV2, backbone_args=VIT, head="salad", lora_rank=2,
                        head_args={"num_clusters": 4, "cluster_dim": 8, "token_dim": 8}).eval()
    save_checkpoint(tmp_path / "m.pt", model, {"dataset": "synthetic"})
    assert read_checkpoint(tmp_path / "m.pt")["architecture"] == {
        "backbone": DINOV2, "backbone_args": VIT, "head": "salad", "lora_rank": 2,
        "head_args": {"num_clusters": 4, "cluster_dim": 8, "token_dim": 8}}
    again, _ = load_checkpoint(tmp_path / "m.pt")
    x = torch.randn(2, 3, 42, 56)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


HEAD_ARGS = {"mixvpr": ["--head-arg", "in_h=2", "--head-arg", "in_w=2", "--head-arg", "out_channels=16"],
             "salad": ["--head-arg", "num_clusters=3", "--head-arg", "cluster_dim=8", "--head-arg", "token_dim=8"]}
# One training run per head (cls: test_heads.py; a run with it is pool's with another key). The
# MixVPR and SALAD runs are also the partial fine-tuning ones, trained one epoch and resumed for a
# second, so that one run checks both.
RUNS = {
    "pool": ["--head", "pool"],
    "gem": ["--head", "gem"],
    "mixvpr-train-blocks": ["--head", "mixvpr", *HEAD_ARGS["mixvpr"],
                            "--train-blocks", "1", "--backbone-lr-scale", "0.5"],
    "salad-lora": ["--head", "salad", *HEAD_ARGS["salad"], "--lora-rank", "2"],
}
RESUMED = ("mixvpr-train-blocks", "salad-lora")


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    """name → the run folder of RUNS[name], trained on first use and shared by the tests."""
    runs: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in runs:
            out = tmp_path_factory.mktemp(name) / "run"
            base = ["train", "--dataset", "synthetic", "--data-root", str(world), "--out", str(out),
                    *TINY_ARGS, *VIT_ARGS, *RUNS[name]]
            res = CliRunner().invoke(app, [*base, "--epochs", "1"])
            assert res.exit_code == 0, res.output
            if name in RESUMED:
                res = CliRunner().invoke(app, [*base, "--epochs", "2", "--resume", str(out)])
                assert res.exit_code == 0, res.output
            runs[name] = out
        return runs[name]

    return get


@pytest.mark.parametrize("name", RUNS)
def test_each_head_trains_and_eval_rebuilds_it(trained, tmp_path, name):
    out = trained(name)
    evals = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    assert [r["epoch"] for r in evals] == ([0, 1, 2] if name in RESUMED else [0, 1])
    res = CliRunner().invoke(app, ["eval", "--checkpoint", str(out / "last.pt"), "--device", "cpu",
                                   "--json", str(tmp_path / "eval.json")])
    assert res.exit_code == 0, res.output
    again = json.loads((tmp_path / "eval.json").read_text())["metrics"]
    assert again["R@1"] == evals[-1]["R@1"] and again["R@10"] == evals[-1]["R@10"]


@pytest.mark.parametrize("name", RESUMED)
def test_frozen_parameters_are_bit_identical_after_training_and_resume(trained, name):
    out = trained(name)
    blocks = "--train-blocks" in RUNS[name]
    trained_state = read_checkpoint(out / "last.pt", run_state=True)
    arch = trained_state["architecture"]
    assert arch["backbone_args"] == VIT and arch["lora_rank"] == (0 if blocks else 2)
    cfg = datasets.train_config("synthetic", backbone=DINOV2, backbone_args=VIT, head=arch["head"], pretrained=False)
    torch.manual_seed(cfg.seed)  # what build_parts does before building the model
    start = initial_model(DINOV2, backbone_args=VIT, head=arch["head"], head_args=arch["head_args"],
                          lora_rank=arch["lora_rank"])
    assert trained_state["epoch"] == 2
    frozen = [k for k in start.state_dict() if k.startswith("encoder.") and ".lora_" not in k
              and not k.startswith(("encoder.blocks.1.", "encoder.norm.") if blocks else "-")]
    assert frozen
    for key in frozen:
        assert torch.equal(trained_state["model"][key], start.state_dict()[key]), key
    moved = [k for k in trained_state["model"]
             if k not in frozen and not torch.equal(trained_state["model"][k], start.state_dict()[k])]
    assert moved and all(k.startswith(("head.", "encoder.blocks.1.", "encoder.norm.")) or ".lora_" in k for k in moved)
    assert any(".lora_" in k for k in moved) != blocks
    # only the trained parameters have optimizer state; the backbone's group has its own lr scale
    groups = trained_state["optimizer"]["param_groups"]
    set_trainable(start, 1 if blocks else None)
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in start.parameters()) + 1
    if blocks:
        assert [g["lr_scale"] for g in groups] == [0.5, 1.0]


def test_eval_on_cvact_of_a_model_trained_on_cvusa_style_data(trained, tmp_path):
    # Cross-dataset transfer (train CVUSA, test CVACT): the checkpoint's model on another
    # benchmark's layout, the sizes given for the ViT's patch.
    out = trained("gem")
    cvact = tmp_path / "cvact"
    write_layout("cvact", cvact, locations=24, seed=1, workers=1)
    args = ["eval", "--checkpoint", str(out / "last.pt"), "--dataset", "cvact", "--data-root", str(cvact),
            "--device", "cpu", "--json", str(tmp_path / "cvact.json")]
    res = CliRunner().invoke(app, args)  # CVACT's preset 140x768 is no multiple of 14
    assert res.exit_code == 2 and "140 (height) and 756 or 770 (width)" in " ".join(res.output.split())
    res = CliRunner().invoke(app, [*args, "--aerial-size", "28", "--ground-size", "28", "56"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "cvact.json").read_text())
    assert report["metrics"]["R@1"] >= 0 and "cvact" in json.dumps(report)
