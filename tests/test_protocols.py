"""`s4g eval` on every dataset layout equals an independent re-implementation of the
evaluation protocol that produced the published numbers (tests/reference.py), ties included.

Each dataset gets a tiny synthetic tree in its release layout and two checkpoints: a random
convnext_micro (no ties), and one whose every embedding is the same unit vector (every
score exactly 1.0: all references tie with the positive).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from reference import sample4geo_protocol, university1652_protocol
from typer.testing import CliRunner

from s4g.app.cli import app
from s4g.app.synth.cache import ensure_world
from s4g.app.synth.writer import write_layout
from s4g.data import registry as datasets
from s4g.model.checkpoint import load_checkpoint, save_checkpoint
from s4g.model.encoder import build_model
from s4g.pipeline.transforms import View
from s4g.retrieval.embed import embed_eval_set

SIZES = {"aerial_size": 32, "ground_size": [32, 64]}
LAYOUTS = {"cvusa": ("cvusa", 24), "cvact": ("cvact", 30), "vigor-same": ("vigor", 40), "vigor-cross": ("vigor", 40),
           "university-d2s": ("university", 6), "university-s2d": ("university", 6)}


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("worlds")
    out = {}
    for layout, locations in set(LAYOUTS.values()):
        write_layout(layout, base / layout, locations=locations, seed=3, workers=1, drone_views=3)
    for name, (layout, _) in LAYOUTS.items():
        out[name] = base / layout
    out["synthetic"] = ensure_world(base / "synthetic", locations=24, seed=3)
    # csv: the CVUSA world's test pairs as the user's own table
    manifest = json.loads((base / "cvusa" / "s4g_synth_manifest.json").read_text())
    rows = ["query,reference,lat,lon,split"] + [
        f"{r['query']},{r['reference']},{r['lat']},{r['lon']},test" for r in manifest["splits"]["val"]]
    shutil.copytree(base / "cvusa", base / "csv")
    (base / "csv" / "pairs.csv").write_text("\n".join(rows) + "\n")
    out["csv"] = base / "csv"
    return out


def _constant_model():
    # zero weights, final LayerNorm bias e_0: every image embeds to exactly e_0
    model = build_model("convnext_micro")
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.encoder.classifier[0].bias[0] = 1.0
    return model


@pytest.mark.parametrize("kind", ["random", "ties"])
@pytest.mark.parametrize("name", datasets.NAMES)
def test_eval_equals_the_reference_protocol(roots, tmp_path, name, kind):
    torch.manual_seed(0)
    model = build_model("convnext_micro") if kind == "random" else _constant_model()
    ckpt = tmp_path / "best.pt"
    save_checkpoint(ckpt, model, {"dataset": name, "data_root": str(roots[name]), "backbone": "convnext_micro",
                                  "batch_size": 16, "workers": 0, "synth_locations": 24, "synth_seed": 3, **SIZES})
    out = tmp_path / "m.json"
    res = CliRunner().invoke(app, ["eval", "--checkpoint", str(ckpt), "--json", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    got = json.loads(out.read_text())

    spec = datasets.get(name)
    ev = datasets.load_eval(name, roots[name])
    q, r = embed_eval_set(load_checkpoint(ckpt)[0], ev, View(**SIZES), device="cpu", batch_size=16, progress=False)
    scores = q @ r.T
    if spec.protocol == "university1652":
        want = university1652_protocol(scores, ev.query_labels, ev.reference_labels)
    else:
        want = sample4geo_protocol(scores, ev.query_labels, ev.reference_labels, ev.semi_positives)
    assert got["protocol"] == spec.protocol
    for key, value in want.items():
        assert got["metrics"][key] == pytest.approx(value, abs=1e-9), key
    if kind == "ties":  # every reference ties with the positive: strictly-higher counts none
        assert got["metrics"]["R@1"] == 100.0


def test_eval_on_the_corrected_vigor_release(roots, tmp_path):
    # the corrected-label release's naming: splits__corrected/{City}/*__corrected.txt, CRLF
    root = tmp_path / "vigor"
    shutil.copytree(roots["vigor-same"], root)
    for city_dir in (root / "splits").iterdir():
        target = root / "splits__corrected" / city_dir.name
        target.mkdir(parents=True)
        for f in city_dir.iterdir():
            name = f.name if f.name == "satellite_list.txt" else f"{f.stem}__corrected.txt"
            (target / name).write_bytes(f.read_bytes().replace(b"\n", b"\r\n"))
    torch.manual_seed(0)
    ckpt = tmp_path / "best.pt"
    save_checkpoint(ckpt, build_model("convnext_micro"), {"backbone": "convnext_micro", **SIZES})
    results = []
    for split_dir in ("splits", "splits__corrected"):
        out = tmp_path / f"{split_dir}.json"
        res = CliRunner().invoke(app, ["eval", "--checkpoint", str(ckpt), "--dataset", "vigor-same", "--data-root",
                                       str(root), "--split-dir", split_dir, "--json", str(out), "--device", "cpu"])
        assert res.exit_code == 0, res.output
        results.append(json.loads(out.read_text())["metrics"])
    assert results[0] == results[1] and "hit_rate" in results[1]
