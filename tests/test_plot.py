"""`s4g plot`: training curves from metrics.jsonl (needs the optional extra `plot`)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from s4g.app.cli import app
from s4g.app.plot import MISSING_EXTRA, training_curve

runner = CliRunner()


def write_run(path, epochs=3, steps=4, log_every=2, metres=True, offset=0.0):
    """A run directory whose metrics.jsonl has the records s4g.app.jobs.train writes: training logs
    (epoch, step, loss, lr, scale), sampling records, the colour baseline and evaluations."""
    path.mkdir(parents=True)
    records = [{"epoch": 0, "kind": "colour_baseline", "R@1": 8.0, "R@5": 20.0, "R@10": 30.0, "R@1%": 12.0}]
    step = 0
    for epoch in range(epochs + 1):
        if epoch:
            records.append({"epoch": epoch, "kind": "sampling", "neighbours": "gps", "batches": steps})
            for _ in range(steps // log_every):
                step += log_every
                records.append({"epoch": epoch, "step": step, "loss": 3.0 / step + offset, "lr": 1e-3 / epoch,
                                "scale": 14.0 + step, "images_per_s": 100.0})
        ev = {"epoch": epoch, "kind": "eval", "split": "test", "R@1": 10.0 * epoch + offset, "R@5": 20.0 * epoch,
              "R@10": 25.0 * epoch, "R@1%": 30.0 * epoch, "AP": 12.0 * epoch, "eval_s": 1.0}
        if metres:
            ev.update(error_median_m=1000.0 / (epoch + 1), error_mean_m=2000.0 / (epoch + 1), within_25m=10.0 * epoch,
                      within_50m=11.0 * epoch, within_100m=12.0 * epoch, within_1km=20.0 * epoch)
        records.append(ev)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_training_curve_reads_fractional_epochs_and_temperature(tmp_path):
    run = write_run(tmp_path / "run", epochs=2, steps=4, log_every=2)
    curve = training_curve([json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()])
    np.testing.assert_allclose(curve["epoch"], [0.5, 1.0, 1.5, 2.0])
    np.testing.assert_allclose(curve["loss"], [1.5, 0.75, 0.5, 0.375])
    np.testing.assert_allclose(curve["lr"], [1e-3, 1e-3, 5e-4, 5e-4])
    np.testing.assert_allclose(curve["temperature"], 1 / np.array([16.0, 18.0, 20.0, 22.0]))


def test_plot_one_and_several_runs(tmp_path):
    pytest.importorskip("matplotlib", reason="the optional extra `plot` is not installed")
    a = write_run(tmp_path / "synthetic-a")
    b = write_run(tmp_path / "synthetic-b", metres=False, offset=1.0)
    res = runner.invoke(app, ["plot", str(a)])
    assert res.exit_code == 0, res.output
    assert "7 panels" in res.output  # loss, lr, temperature, recall, hit rate / AP, error, within
    with Image.open(a / "curves.png") as img:
        assert img.format == "PNG" and img.size == (1680, 660)  # 4 × 2 panels of 4.2 × 3 in at 100 dpi
        pixels = np.asarray(img.convert("RGB"))
    assert (pixels != 255).any(axis=2).mean() > 0.02  # something was drawn
    out = tmp_path / "cmp" / "both.svg"
    res = runner.invoke(app, ["plot", str(a), str(b), "--out", str(out)])
    assert res.exit_code == 0, res.output
    svg = out.read_text()
    assert svg.lstrip().startswith("<?xml") and "synthetic-a" in svg and "synthetic-b" in svg


def _damaged(run, line: bytes):
    """`run` with `line` as the second line of its metrics.jsonl."""
    first, rest = (run / "metrics.jsonl").read_bytes().split(b"\n", 1)
    (run / "metrics.jsonl").write_bytes(first + b"\n" + line + b"\n" + rest)
    return run


@pytest.mark.parametrize("args, message", [
    (lambda t: [str(write_run(t / "a")), str(write_run(t / "b"))], "--out is needed"),
    (lambda t: [str(t / "nothing")], "metrics.jsonl: no such file"),
    (lambda t: [str(write_run(t / "a")), "--out", str(t / "x.docx")], "--out"),
    (lambda t: [str(_damaged(write_run(t / "a"), b"\xff{"))], "metrics.jsonl, line 2: not JSON"),
    (lambda t: [str(_damaged(write_run(t / "a"), b"[1]"))], "metrics.jsonl, line 2: not a JSON object"),
])
def test_bad_input_exits_2(tmp_path, args, message):
    pytest.importorskip("matplotlib", reason="the optional extra `plot` is not installed")
    res = runner.invoke(app, ["plot", *args(tmp_path)])
    assert res.exit_code == 2 and message in res.output, res.output


def test_plot_writes_only_the_formats_it_can_replace(tmp_path):
    """Every suffix plot accepts is a figure that `plot --overwrite` may replace: one it
    accepted but could not tell again (a JPEG) would be refused on the next run."""
    pytest.importorskip("matplotlib", reason="the optional extra `plot` is not installed")
    run = write_run(tmp_path / "run")
    for suffix in ("png", "pdf", "svg"):
        out = tmp_path / f"curves.{suffix}"
        for again in ([], ["--overwrite"]):
            res = runner.invoke(app, ["plot", str(run), "--out", str(out), *again])
            assert res.exit_code == 0, (suffix, again, res.output)
    for suffix in ("jpg", "eps", "tiff"):
        out = tmp_path / f"curves.{suffix}"
        res = runner.invoke(app, ["plot", str(run), "--out", str(out)])
        text = " ".join(res.output.split())
        assert res.exit_code == 2 and f"--out {out}" in text and ".png, .pdf, .svg" in text, res.output
        assert "Traceback" not in res.output and not out.exists()
    Image.new("RGB", (4, 4)).save(tmp_path / "old.jpg")  # not a figure plot wrote: kept
    res = runner.invoke(app, ["plot", str(run), "--out", str(tmp_path / "old.jpg"), "--overwrite"])
    assert res.exit_code == 2 and "not a PNG, PDF or SVG figure" in " ".join(res.output.split()), res.output


def test_missing_matplotlib_names_the_extra(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    res = runner.invoke(app, ["plot", str(write_run(tmp_path / "run"))])
    assert res.exit_code == 2 and "s4g[plot]" in res.output and "Traceback" not in res.output
    assert MISSING_EXTRA.split(":")[0] in " ".join(res.output.split())
