"""Weight import: timm ConvNeXt (Sample4Geo's layout) -> s4g's torchvision encoder.

timm is the oracle: a converted model must give the same embeddings as the timm model.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import StochasticDepth
from typer.testing import CliRunner

from s4g.app.cli import app
from s4g.model.checkpoint import load_checkpoint
from s4g.model.encoder import empty_model
from s4g.model.weights import load_timm_weights

runner = CliRunner()


def _timm():
    return pytest.importorskip("timm", reason="timm (test extra) is the oracle for weight import")


def _randomise(model: torch.nn.Module) -> torch.nn.Module:
    # timm initialises layer scale to 1e-6 and norms to identity, which would hide a wrong
    # mapping of those tensors; give every parameter a non-trivial value.
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("gamma", "bias")) or "norm" in name:
                p.normal_(0.3, 0.4)
    return model.eval()


def _timm_micro(**kw) -> torch.nn.Module:
    from timm.models.convnext import ConvNeXt

    # the depths and widths of s4g's convnext_micro
    return _randomise(ConvNeXt(depths=(1, 1, 2, 1), dims=(24, 48, 96, 192), num_classes=0, **kw))


def _sample4geo_layout(state: dict) -> dict:
    # as released: DataParallel prefix, the timm model under `model.`, the loss temperature.
    wrapped = {f"module.model.{k}": v for k, v in state.items()}
    wrapped["module.logit_scale"] = torch.tensor(2.659)
    return {"state_dict": wrapped}


def _same_embeddings(timm_model, model, size=(64, 64)) -> float:
    x = torch.randn(3, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = F.normalize(timm_model(x), dim=-1)
        got = model(x)
    assert got.shape == expected.shape
    assert (got[0] - got[1]).abs().max() > 1e-3  # the embeddings are not degenerate
    return float((got - expected).abs().max())


@pytest.mark.parametrize("name", ["convnext_tiny", "convnext_small"])
def test_converted_timm_model_gives_the_same_embeddings(name):
    timm = _timm()
    timm_model = _randomise(timm.create_model(name, pretrained=False, num_classes=0))
    model, backbone, ignored = load_timm_weights(_sample4geo_layout(timm_model.state_dict()), "src.pth")
    assert backbone == name
    assert ignored == ["logit_scale"]
    assert _same_embeddings(timm_model, model) <= 1e-5


def test_conv_mlp_variant_converts():
    _timm()
    timm_model = _timm_micro(conv_mlp=True)
    model, backbone, _ = load_timm_weights(timm_model.state_dict(), "src.pth")
    assert backbone == "convnext_micro"
    assert _same_embeddings(timm_model, model, size=(64, 96)) <= 1e-5


def test_import_weights_cli_writes_a_checkpoint_with_sizes(tmp_path):
    _timm()
    timm_model = _timm_micro()
    src = tmp_path / "released.pth"
    torch.save(_sample4geo_layout(timm_model.state_dict()), src)
    out = tmp_path / "ckpt.pt"
    result = runner.invoke(app, ["import-weights", str(src), "--out", str(out), "--dataset", "vigor-same"])
    assert result.exit_code == 0, result.output
    model, config = load_checkpoint(out)
    assert config["backbone"] == "convnext_micro"
    assert config["aerial_size"] == 384 and config["ground_size"] == [384, 768]
    assert len(config["imported_from"]["sha256"]) == 64
    assert _same_embeddings(timm_model, model) <= 1e-5
    # without --dataset the sizes are CVUSA's, and explicit sizes win (replacing needs --overwrite)
    result = runner.invoke(
        app, ["import-weights", str(src), "--out", str(out), "--ground-size", "64", "256", "--overwrite"]
    )
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out)[1]["ground_size"] == [64, 256]
    assert load_checkpoint(out)[1]["aerial_size"] == 384


def test_load_checkpoint_accepts_a_released_state_dict(tmp_path):
    _timm()
    timm_model = _timm_micro()
    src = tmp_path / "released.pth"
    torch.save(_sample4geo_layout(timm_model.state_dict()), src)
    model, config = load_checkpoint(src)
    assert config["backbone"] == "convnext_micro" and config["ground_size"] == [140, 768]
    assert _same_embeddings(timm_model, model) <= 1e-5


def test_unknown_key_and_missing_key_are_both_listed(tmp_path):
    _timm()
    state = _timm_micro().state_dict()
    state["stages.2.blocks.1.conv_dww.weight"] = state.pop("stages.2.blocks.1.conv_dw.weight")
    with pytest.raises(ValueError) as err:
        load_timm_weights(state, "bad.pth")
    message = str(err.value)
    assert "bad.pth" in message
    assert "missing keys: features.5.1.block.0.weight" in message
    assert "unexpected keys: stages.2.blocks.1.conv_dww.weight" in message


def test_wrong_shape_is_listed(tmp_path):
    _timm()
    state = _timm_micro().state_dict()
    state["head.norm.weight"] = state["head.norm.weight"][:10]
    with pytest.raises(ValueError, match=r"wrong shape keys: classifier\.0\.weight: \(10,\) vs \(192,\)"):
        load_timm_weights(state, "bad.pth")


def test_backbone_mismatch_and_unknown_backbone_exit_2(tmp_path):
    _timm()
    src = tmp_path / "micro.pth"
    torch.save(_timm_micro().state_dict(), src)
    out = tmp_path / "ckpt.pt"
    result = runner.invoke(app, ["import-weights", str(src), "--out", str(out), "--backbone", "convnext_tiny"])
    assert result.exit_code == 2
    assert "micro.pth" in result.output and "wrong shape keys" in result.output
    result = runner.invoke(app, ["import-weights", str(src), "--out", str(out), "--backbone", "convnext_huge"])
    assert result.exit_code == 2 and "unknown backbone 'convnext_huge'" in result.output
    assert not out.exists()


def test_norm_pre_variant_is_refused():
    _timm()
    state = _timm_micro().state_dict()
    state["norm_pre.weight"] = state.pop("head.norm.weight")
    state["norm_pre.bias"] = state.pop("head.norm.bias")
    with pytest.raises(ValueError, match="norm_pre"):
        load_timm_weights(state, "v.pth")


class _Payload:  # a custom class: loading it would run arbitrary code paths
    def __init__(self):
        self.weights = torch.zeros(2)


@pytest.mark.parametrize("kind", ["list", "text", "short", "resnet", "unsafe"])
def test_files_that_are_not_convnext_weights_exit_2(tmp_path, kind):
    src = tmp_path / f"{kind}.pth"
    if kind == "list":
        torch.save([torch.zeros(2), 3], src)
    elif kind == "text":
        src.write_text("not a checkpoint\n")
    elif kind == "short":
        src.write_text("hi\n")  # the unpickler stumbles with a KeyError on these bytes
    elif kind == "resnet":
        torch.save({"conv1.weight": torch.zeros(8, 3, 7, 7), "fc.bias": torch.zeros(4)}, src)
    else:
        torch.save({"model": _Payload()}, src)
    out = tmp_path / "ckpt.pt"
    result = runner.invoke(app, ["import-weights", str(src), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert f"{kind}.pth" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()
    with pytest.raises(ValueError, match=f"{kind}.pth"):
        load_checkpoint(src)


def test_eval_runs_on_released_weights_directly(tmp_path):
    _timm()
    from s4g.app.synth.writer import write_layout

    root = tmp_path / "cvusa"
    write_layout("cvusa", root, locations=8, seed=1, workers=1)
    src = tmp_path / "released.pth"
    torch.save(_sample4geo_layout(_timm_micro().state_dict()), src)
    out = tmp_path / "metrics.json"
    result = runner.invoke(app, ["eval", "--checkpoint", str(src), "--dataset", "cvusa", "--data-root", str(root),
                                 "--device", "cpu", "--json", str(out), "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    assert "R@1" in out.read_text()


# ---- initial weights of a training run: the paper's timm weights, or a local file ----------


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_training_starts_from_a_timm_weights_file(tmp_path, suffix):
    _timm()
    from s4g.model.weights import initial_model

    timm_model = _timm_micro()  # timm's layout, as convnext_base.fb_in22k_ft_in1k_384 is
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file  # timm's dependency: an independent writer

        save_file({k: v.contiguous() for k, v in timm_model.state_dict().items()}, str(path))
    else:
        torch.save(timm_model.state_dict(), path)
    model = initial_model("convnext_micro", weights_file=path)
    assert _same_embeddings(timm_model, model) <= 1e-5


def test_broken_safetensors_file_is_named(tmp_path):
    from s4g.errors import UserInputError
    from s4g.model.weights import initial_model

    path = tmp_path / "w.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(UserInputError, match="w.safetensors: not a readable .safetensors file"):
        initial_model("convnext_micro", weights_file=path)


@pytest.mark.parametrize("header", [b"[1,2]", b'"text"', b"7", b"null", b'{"w": [1, 2]}', b'{"w": {"dtype": [1]}}'])
def test_a_safetensors_header_of_the_wrong_shape_is_named(tmp_path, header):
    from s4g.errors import UserInputError
    from s4g.model.weightfile import load_weights_file

    path = tmp_path / "w.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(UserInputError, match="w.safetensors: not a readable .safetensors file"):
        load_weights_file(path)


def test_pretrained_fetches_the_papers_timm_weights(monkeypatch):
    timm = _timm()
    from s4g.data import registry as datasets
    from s4g.model import weights

    assert weights.TIMM_WEIGHTS["convnext_base"] == "convnext_base.fb_in22k_ft_in1k_384"
    for name in ("cvusa", "cvact", "vigor-same", "vigor-cross", "university-d2s"):
        cfg = datasets.train_config(name)
        assert (cfg.backbone, cfg.pretrained, cfg.pretrained_from) == ("convnext_base", True, "timm")
    asked, fetched = [], _timm_micro()

    def fake_create(name, pretrained=False, num_classes=1000):
        asked.append((name, pretrained, num_classes))
        return fetched

    monkeypatch.setattr(timm, "create_model", fake_create)  # no network here: timm's download stubbed
    monkeypatch.setattr(weights, "_hub_reachable", lambda timeout_s=3.0: True)  # nor the reachability probe
    monkeypatch.setitem(weights.TIMM_WEIGHTS, "convnext_micro", "convnext_micro.stand_in")
    model = weights.initial_model("convnext_micro", pretrained=True)
    assert asked == [("convnext_micro.stand_in", True, 0)]
    assert _same_embeddings(fetched, model) <= 1e-5


def test_pretrained_without_timm_says_both_ways(monkeypatch):
    import sys

    from s4g.errors import UserInputError
    from s4g.model.weights import initial_model

    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` fails as if not installed
    with pytest.raises(UserInputError) as info:
        initial_model("convnext_base", pretrained=True)
    message = str(info.value)
    assert 's4g[timm]' in message and "--weights FILE" in message and "convnext_base.fb_in22k_ft_in1k_384" in message
    with pytest.raises(UserInputError, match="--pretrained-from torchvision"):
        initial_model("resnet18", pretrained=True)


@pytest.mark.parametrize("backbone", ["convnext_tiny", "convnext_small", "convnext_base", "convnext_large"])
def test_convnexts_have_no_stochastic_depth_as_the_published_models(backbone):
    # torchvision's builders default to 0.1-0.5; the reference trained timm's ConvNeXt, whose
    # drop_path_rate defaults to 0
    assert {m.p for m in empty_model(backbone).modules() if isinstance(m, StochasticDepth)} == {0.0}
