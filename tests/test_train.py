"""Training loop: schedule, RNG state, end-to-end CLI run, exact resume, bad input -> exit 2."""

from __future__ import annotations

import dataclasses
import json
import math
import random

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from s4g.app.cli import app
from s4g.app.jobs.train import run
from s4g.app.jobs.train.schedule import evaluates_after, lr_at, mines_after
from s4g.app.jobs.train.state import rng_state, set_rng_state
from s4g.app.synth.cache import ensure_world
from s4g.data import registry as datasets

# A world small enough for seconds-long runs on a shared 2-core machine.
TINY = dict(synth_locations=60, aerial_size=32, ground_size=(32, 64), batch_size=8,
            eval_batch_size=32, log_every=2, workers=0, gps_k=8, neighbour_select=4,
            neighbour_range=8, augment=True)
TINY_ARGS = ["--locations", "60", "--aerial-size", "32", "--ground-size", "32", "64",
             "--batch-size", "8", "--eval-batch-size", "32", "--log-every", "2", "--workers", "0"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return ensure_world(tmp_path_factory.mktemp("synth") / "world", locations=TINY["synth_locations"], seed=0)


def test_lr_schedule_warmup_then_cosine():
    kw = dict(base_lr=1e-3, warmup_steps=10, total_steps=110)
    warm = [lr_at(s, **kw) for s in range(10)]
    assert warm == sorted(warm) and warm[0] == pytest.approx(1e-4) and warm[-1] == pytest.approx(1e-3)
    assert lr_at(10, **kw) == pytest.approx(1e-3)
    assert lr_at(60, **kw) == pytest.approx(0.5e-3)  # half way through the cosine
    assert lr_at(110, **kw) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(500, **kw) == pytest.approx(0.0, abs=1e-12)
    decay = [lr_at(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))
    assert lr_at(0, base_lr=1.0, warmup_steps=0, total_steps=4) == 1.0
    assert lr_at(2, base_lr=1.0, warmup_steps=0, total_steps=4) == pytest.approx(0.5)


def test_eval_and_mining_epochs():
    assert [e for e in range(1, 13) if evaluates_after(e, 12, 4)] == [4, 8, 12]
    # the released schedule: GPS lists for epochs 1-4, first mined at the epoch-4 evaluation
    assert [e for e in range(1, 13) if mines_after(e, 12, 4)] == [4, 8]
    assert [e for e in range(1, 4) if mines_after(e, 3, 1)] == [1, 2]  # --eval-every 1


def test_rng_state_roundtrip_through_weights_only_load(tmp_path):
    torch.manual_seed(3)
    np.random.seed(4)
    random.seed(5)
    np.random.randn()  # leave a cached Gaussian in numpy's state
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


def test_config_from_preset():
    cfg = datasets.train_config("cvusa", data_root="/x", epochs=3, backbone=None)
    assert cfg.epochs == 3 and cfg.backbone == "convnext_base" and cfg.ground_size == (140, 768)
    assert cfg.sampling == "dss"
    assert datasets.train_config("university-d2s").sampling == "random"
    with pytest.raises(ValueError, match="'mnist' is not a dataset"):
        datasets.train_config("mnist")


def test_cli_end_to_end_synthetic(world, tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "--dataset", "synthetic", "--data-root", str(world),
                                   "--out", str(out), "--epochs", "1", *TINY_ARGS])
    assert res.exit_code == 0, res.output
    for name in ("config.json", "metrics.jsonl", "last.pt", "best.pt"):
        assert (out / name).is_file(), name
    cfg = json.loads((out / "config.json").read_text())
    for key in ("dataset", "data_root", "backbone", "aerial_size", "ground_size", "split_dir",
                "eval_split", "batch_size"):
        assert key in cfg
    assert cfg["ground_size"] == [32, 64] and cfg["dataset"] == "synthetic"
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in lines if r.get("kind") == "eval"]
    assert [r["epoch"] for r in evals] == [0, 1]
    assert any(r.get("kind") == "colour_baseline" for r in lines)
    losses = [r["loss"] for r in lines if "loss" in r]
    assert losses and all(math.isfinite(v) for v in losses)
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["step"] >= 1 and ckpt["config"]["batch_size"] == 8
    # `s4g eval` of the epoch-1 weights takes the same path as the evaluation during training
    res = CliRunner().invoke(app, ["eval", "--checkpoint", str(out / "last.pt"), "--device", "cpu",
                                   "--json", str(tmp_path / "eval.json")])
    assert res.exit_code == 0, res.output
    again = json.loads((tmp_path / "eval.json").read_text())["metrics"]
    shared = ("R@1", "R@5", "R@10", "R@1%", "error_median_m", "error_mean_m", "within_25m", "within_1km")
    assert {k: again[k] for k in shared} == {k: evals[1][k] for k in shared}  # metres logged in training too


def _same_state(a, b, path=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _same_state(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same_state(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


@pytest.mark.parametrize("sampling, chunk", [("dss", 0), ("dss", 3)])
def test_resume_gives_the_same_weights(world, tmp_path, sampling, chunk):
    cfg = datasets.train_config("synthetic", data_root=str(world), epochs=2, sampling=sampling,
                                device="cpu", chunk_size=chunk, **TINY)
    straight = run(dataclasses.replace(cfg, out=str(tmp_path / "a")))
    run(dataclasses.replace(cfg, out=str(tmp_path / "b")), stop_after_epoch=1)
    first = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert first["epoch"] == 1 and first["neighbours"] is not None  # mined after epoch 1
    best = torch.load(tmp_path / "b" / "best.pt", weights_only=True)  # saved after that mining
    assert best["epoch"] == 1 and torch.equal(best["neighbours"], first["neighbours"])
    resumed = run(cfg, resume=str(tmp_path / "b"))
    assert resumed == (tmp_path / "b").resolve()
    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(resumed / "last.pt", weights_only=True)
    for key in ("model", "loss", "optimizer", "step", "epoch"):
        _same_state(a[key], b[key], key)
    evals = [json.loads(x) for x in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in evals if r.get("kind") == "eval"] == [0, 1, 2]


def _invoke(*args):
    return CliRunner().invoke(app, ["train", *args])


def test_bad_inputs_exit_2(world, tmp_path):
    base = ["--data-root", str(world), "--epochs", "1", *TINY_ARGS]
    cases = {
        "unknown dataset": ["--dataset", "mnist", "--data-root", str(tmp_path)],
        "unknown backbone": ["--dataset", "synthetic", *base, "--backbone", "vgg99"],
        "unknown sampling": ["--dataset", "synthetic", *base, "--sampling", "hard"],
        "missing root": ["--dataset", "cvusa", "--data-root", str(tmp_path / "nope")],
        "root without data": ["--dataset", "cvusa", "--data-root", str(tmp_path)],
        "batch > classes": ["--dataset", "synthetic", *base, "--batch-size", "100000"],
    }
    for label, args in cases.items():
        res = _invoke(*args, "--out", str(tmp_path / "r"))
        assert res.exit_code == 2, (label, res.output)
        assert "Traceback" not in res.output, label
    # A run, then a resume that changes the backbone / batch size.
    out = tmp_path / "ok"
    assert _invoke("--dataset", "synthetic", *base, "--out", str(out)).exit_code == 0
    for change in (["--backbone", "resnet18"], ["--batch-size", "4"]):
        res = _invoke("--dataset", "synthetic", *base, *change, "--resume", str(out))
        assert res.exit_code == 2 and "another configuration" in res.output, res.output


def test_out_of_memory_names_the_batch_size(monkeypatch, tmp_path):
    import s4g.app.jobs.train.loop as train_mod
    from s4g.errors import UserInputError

    def boom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(train_mod, "_run", boom)
    cfg = datasets.train_config("synthetic", device="cpu", batch_size=48, out=str(tmp_path))
    with pytest.raises(UserInputError, match="--batch-size 48.*--chunk-size auto"):
        run(cfg)
    with pytest.raises(UserInputError, match="--chunk-size below 8"):
        run(dataclasses.replace(cfg, chunk_size=8))


def test_cli_resume_without_dataset_continues_the_saved_run(world, tmp_path):
    out = tmp_path / "run"
    args = ["--data-root", str(world), "--epochs", "1", *TINY_ARGS]
    assert _invoke("--dataset", "synthetic", *args, "--out", str(out)).exit_code == 0
    res = _invoke("--resume", str(out), "--epochs", "2")
    assert res.exit_code == 0, res.output
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["config"]["epochs"] == 2 and ckpt["config"]["batch_size"] == 8
    assert _invoke("--epochs", "2").exit_code == 2  # neither --dataset nor --resume


def test_weight_decay_on_every_parameter_as_the_reference():
    from s4g.app.jobs.train.step import build_parts
    from s4g.distributed import DistEnv

    cfg = datasets.train_config("synthetic", weight_decay=0.05, device="cpu")
    parts, _ = build_parts(cfg, DistEnv(0, 1, 0, torch.device("cpu")), None)
    (group,) = parts.optimizer.param_groups
    assert group["weight_decay"] == 0.05
    expected = {id(p) for p in parts.model.parameters()} | {id(parts.loss_fn.logit_scale)}
    assert {id(p) for p in group["params"]} == expected


def test_metrics_log_says_which_lists_packed_each_epoch(world, tmp_path):
    # the released DSS schedule: GPS lists for epochs 1-4, mined from the epoch-4 evaluation on
    cfg = datasets.train_config("synthetic", data_root=str(world), epochs=5, sampling="dss", eval_every=4,
                                device="cpu", out=str(tmp_path / "run"), **TINY)
    lines = [json.loads(x) for x in (run(cfg) / "metrics.jsonl").read_text().splitlines()]
    sampling = [r for r in lines if r.get("kind") == "sampling"]
    assert [r["epoch"] for r in sampling] == [1, 2, 3, 4, 5]
    assert [r["neighbours"] for r in sampling] == ["gps"] * 4 + ["mined"]
    assert all(0 < r["via_neighbour"] <= r["pairs_placed"] <= 1 for r in sampling)
    assert [r["epoch"] for r in lines if r.get("kind") == "eval"] == [0, 4, 5]
