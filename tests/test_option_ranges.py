"""Every number a user can type is checked before work starts: each numeric option of each
command, given out of range, exits 2 with one paragraph naming the option, no traceback, and
nothing written."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from probes import error_paragraph, snapshot
from typer.testing import CliRunner

from s4g.app.cli import app
from s4g.model.checkpoint import save_checkpoint
from s4g.model.encoder import build_model

runner = CliRunner()


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, list]:
    """Each command's valid arguments (files it reads exist; nothing it writes does)."""
    tmp = tmp_path_factory.mktemp("ranges")
    torch.manual_seed(0)
    config = {"dataset": "cvusa", "data_root": str(tmp / "no-data"), "backbone": "convnext_micro",
              "split_dir": "splits", "eval_split": "test", "batch_size": 8, "neighbour_range": 5, "workers": 0,
              "aerial_size": 32, "ground_size": [32, 64]}
    ckpt = tmp / "best.pt"
    save_checkpoint(ckpt, build_model("convnext_micro"), config)
    (tmp / "pts.csv").write_text("file,lat,lon\n" + "".join(f"t{i}.png,{i * 0.01},{i * 0.02}\n" for i in range(6)))
    (tmp / "tiles").mkdir()
    for i in range(6):
        Image.new("RGB", (8, 8)).save(tmp / "tiles" / f"t{i}.png")
    Image.new("RGB", (16, 8)).save(tmp / "photo.png")
    state = dict(build_model("convnext_micro").state_dict())
    torch.save(state, tmp / "weights.pth")
    out = tmp / "out"
    return {
        "tmp": tmp,
        "synth": ["synth", "--layout", "cvusa", "--out", out / "w", "--locations", "4", "--workers", "1"],
        "neighbours": ["neighbours", "--coords", tmp / "pts.csv", "--out", out / "nb.npz", "--k", "2"],
        "train": ["train", "--dataset", "synthetic", "--data-root", out / "world", "--out", out / "run",
                  "--device", "cpu", "--workers", "0"],
        "eval": ["eval", "--checkpoint", ckpt, "--device", "cpu", "--json", out / "m.json"],
        "mine": ["mine", "--checkpoint", ckpt, "--device", "cpu", "--out", out / "mined.npz"],
        "index": ["index", "--checkpoint", ckpt, "--images", tmp / "tiles", "--coords", tmp / "pts.csv",
                  "--out", out / "i.npz", "--device", "cpu"],
        "locate": ["locate", tmp / "photo.png", "--index", tmp / "none.npz", "--device", "cpu"],
        "import-weights": ["import-weights", tmp / "weights.pth", "--out", out / "c.pt"],
    }


NAN, BIG_SEED = "nan", str(2**32)
PROBES = [
    ("synth", "--locations", "-1"), ("synth", "--seed", "-1"), ("synth", "--seed", BIG_SEED),
    ("synth", "--shading", "-1"), ("synth", "--shading", NAN), ("synth", "--jitter", "-1"), ("synth", "--jitter", NAN),
    ("synth", "--cvact-missing", "-1"), ("synth", "--drone-views", "0"), ("synth", "--workers", "-1"),
    ("neighbours", "--k", "-1"),
    ("train", "--epochs", "0"), ("train", "--batch-size", "-1"), ("train", "--lr", "-1"), ("train", "--lr", NAN),
    ("train", "--weight-decay", "-1"), ("train", "--weight-decay", NAN), ("train", "--warmup-epochs", "-1"),
    ("train", "--neighbour-select", "0"), ("train", "--neighbour-range", "0"), ("train", "--max-failed-pops", "0"),
    ("train", "--gps-k", "0"), ("train", "--eval-every", "0"), ("train", "--aerial-size", "-1"),
    ("train", "--aerial-size", "100000"), ("train", "--seed", "-1"), ("train", "--seed", BIG_SEED),
    ("train", "--workers", "-1"), ("train", "--eval-batch-size", "0"), ("train", "--fov", "-1"),
    ("train", "--fov", NAN), ("train", "--log-every", "0"), ("train", "--locations", "-1"),
    ("train", "--chunk-size", "-1"),
    ("eval", "--batch-size", "0"), ("eval", "--workers", "-1"), ("eval", "--fov", "-1"), ("eval", "--seed", "-1"),
    ("eval", "--examples-count", "0"), ("eval", "--examples-count", "100000"), ("eval", "--examples-seed", "-1"),
    ("eval", "--examples-size", "8"), ("eval", "--examples-size", "100000"),
    ("mine", "--k", "0"), ("mine", "--batch-size", "0"), ("mine", "--workers", "-1"),
    ("index", "--batch-size", "0"), ("index", "--workers", "-1"),
    ("locate", "--k", "0"), ("locate", "--fov", "-1"), ("locate", "--heading", NAN), ("locate", "--radius", "-1"),
    ("import-weights", "--aerial-size", "-1"), ("import-weights", "--aerial-size", "100000"),
]
TUPLES = [("train", "--ground-size", ["-1", "64"]), ("import-weights", "--ground-size", ["32", "0"])]


@pytest.mark.parametrize("command, option, values",
                         [(c, o, [v]) for c, o, v in PROBES] + TUPLES,
                         ids=lambda x: x if isinstance(x, str) else " ".join(x))
def test_an_out_of_range_option_is_refused_before_any_work(base, command, option, values):
    before = snapshot(base["tmp"])
    extra = ["--random-heading", "--fov", "90"] if command == "eval" and option == "--seed" else []
    result = runner.invoke(app, [str(a) for a in [*base[command], *extra, option, *values]])
    message = error_paragraph(result)
    assert option in message, message
    assert "Traceback" not in result.output
    assert snapshot(base["tmp"]) == before
    assert not (base["tmp"] / "out").exists()
