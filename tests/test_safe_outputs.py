"""Outputs never cost a user a file: no command writes onto its own input or onto a file of
another kind, replacing an output needs --overwrite, default names keep evaluations of other
views apart, and a failed write (disk full, ...) is one paragraph that keeps the old file."""

from __future__ import annotations

import errno
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from probes import (
    FullDisk,
    assert_unchanged,
    child_env,
    cli_subprocess_args,
    error_paragraph,
    paragraph_of,
    snapshot,
    temporaries,
)
from typer.testing import CliRunner

from s4g import fileio
from s4g.app.cli import app
from s4g.app.synth.writer import write_layout
from s4g.model.checkpoint import save_checkpoint
from s4g.model.encoder import build_model

try:
    import resource
except ImportError:  # Windows
    resource = None

runner = CliRunner()
SIZES = {"aerial_size": 64, "ground_size": [32, 128]}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cvusa")
    write_layout("cvusa", root, locations=40, seed=0, workers=1)
    return root


@pytest.fixture()
def run_dir(world, tmp_path) -> Path:
    """A finished run's folder: best.pt and last.pt of a fresh convnext_micro."""
    torch.manual_seed(0)
    config = {"dataset": "cvusa", "data_root": str(world), "backbone": "convnext_micro", "split_dir": "splits",
              "eval_split": "test", "batch_size": 8, "neighbour_range": 5, "workers": 0, **SIZES}
    run = tmp_path / "run"
    save_checkpoint(run / "best.pt", build_model("convnext_micro"), config)
    shutil.copy(run / "best.pt", run / "last.pt")
    return run


def invoke(*args) -> object:
    return runner.invoke(app, [str(a) for a in args])


def coords(tmp_path: Path) -> Path:
    path = tmp_path / "pts.csv"
    path.write_text("lat,lon\n" + "".join(f"{i * 0.01},{i * 0.02}\n" for i in range(20)))
    return path


def test_no_command_writes_onto_an_input_or_another_kind_of_file(world, run_dir, tmp_path):
    pts = coords(tmp_path)
    (tmp_path / "link.npz").symlink_to(pts)
    tile = next((world / "bingmap" / "19").iterdir())
    before = snapshot(run_dir, pts, tile)
    ckpt = ["--checkpoint", run_dir / "best.pt"]
    probes = {
        "eval --json onto its checkpoint": (["eval", *ckpt, "--json", run_dir / "best.pt"], "input"),
        "eval --json onto another checkpoint": (["eval", *ckpt, "--json", run_dir / "last.pt"], "not an s4g eval"),
        "mine --out onto a checkpoint": (["mine", *ckpt, "--out", run_dir / "last.pt"], "not an s4g mine"),
        "index --out onto a checkpoint": (["index", *ckpt, "--dataset", "cvusa", "--data-root", world,
                                           "--out", run_dir / "last.pt"], "not an s4g index"),
        "neighbours --out onto --coords": (["neighbours", "--coords", pts, "--k", "3", "--out", pts], "input"),
        "neighbours --out onto --coords by a link": (["neighbours", "--coords", pts, "--k", "3",
                                                      "--out", tmp_path / "link.npz"], "input"),
        "neighbours --out onto a dataset image": (["neighbours", "--coords", pts, "--k", "3", "--out", tile,
                                                   "--overwrite"], "not an s4g neighbours file"),
        "import-weights --out onto its source": (["import-weights", run_dir / "last.pt", "--out", run_dir / "last.pt"],
                                                 "input"),
        "import-weights --out onto a checkpoint": (["import-weights", pts, "--out", run_dir / "best.pt"],
                                                   "--overwrite"),
        "eval --json a folder": (["eval", *ckpt, "--json", run_dir], "folder"),
    }
    for label, (args, said) in probes.items():
        message = error_paragraph(invoke(*args))
        assert said in message, (label, message)
        assert_unchanged(before)
    assert sorted(p.name for p in run_dir.iterdir()) == ["best.pt", "last.pt"]


def test_the_result_files_of_eval_locate_and_plot_are_guarded_too(run_dir, tmp_path):
    pts = coords(tmp_path)
    photo = tmp_path / "photo.png"
    Image.new("RGB", (16, 8)).save(photo)
    (run_dir / "metrics.jsonl").write_text('{"epoch": 0, "kind": "eval", "R@1": 1.0}\n')
    Image.new("RGB", (4, 4)).save(run_dir / "curves.png")
    before = snapshot(run_dir, pts, photo)
    ckpt = ["--checkpoint", run_dir / "best.pt"]
    locate = ["locate", photo, "--index", tmp_path / "none.npz"]
    probes = {
        "eval --per-query onto its checkpoint": (["eval", *ckpt, "--per-query", run_dir / "best.pt"], "input"),
        "eval --per-query onto a table": (["eval", *ckpt, "--per-query", pts], "not an s4g per-query CSV"),
        "eval --examples onto a checkpoint": (["eval", *ckpt, "--examples", run_dir / "last.pt"], "not a PNG"),
        "locate --picture onto its photo": ([*locate, "--picture", photo], "input"),
        "locate --geojson onto a table": ([*locate, "--geojson", pts], "not a GeoJSON"),
        "plot --out onto the metrics": (["plot", run_dir, "--out", run_dir / "metrics.jsonl"], "input"),
        "plot --out onto a checkpoint": (["plot", run_dir, "--out", run_dir / "best.pt"], "not a PNG, PDF or SVG"),
        "plot again": (["plot", run_dir], "--overwrite"),
    }
    for label, (args, said) in probes.items():
        message = error_paragraph(invoke(*args))
        assert said in message, (label, message)
        assert_unchanged(before)


def test_two_outputs_of_one_command_are_never_the_same_file(run_dir, tmp_path):
    photo = tmp_path / "photo.png"
    Image.new("RGB", (16, 8)).save(photo)
    (tmp_path / "link.csv").symlink_to(tmp_path / "o.csv")  # dangling until something writes o.csv
    before = snapshot(run_dir, photo)
    ckpt = ["--checkpoint", run_dir / "best.pt"]
    default_json = run_dir / "eval-cvusa-test.json"
    probes = {
        "eval --per-query X --examples X": (["eval", *ckpt, "--per-query", tmp_path / "o.csv", "--examples",
                                             tmp_path / "o.csv"], ("--per-query", "--examples")),
        "eval --json X --per-query X": (["eval", *ckpt, "--json", tmp_path / "o.csv", "--per-query",
                                         tmp_path / "o.csv"], ("--json", "--per-query")),
        "eval --per-query X --examples a link to X": (["eval", *ckpt, "--per-query", tmp_path / "o.csv",
                                                       "--examples", tmp_path / "link.csv"],
                                                      ("--per-query", "--examples")),
        "eval --examples onto the default --json": (["eval", *ckpt, "--examples", default_json],
                                                    ("the default --json", "--examples")),
        "locate --geojson X --picture X": (["locate", photo, "--index", tmp_path / "none.npz", "--geojson",
                                            tmp_path / "o.json", "--picture", tmp_path / "o.json"],
                                           ("--geojson", "--picture")),
        "synth --out X --preview X": (["synth", "--layout", "cvusa", "--locations", "2", "--out", tmp_path / "x",
                                       "--preview", tmp_path / "x"], ("--out", "--preview")),
    }
    for label, (args, options) in probes.items():
        message = error_paragraph(invoke(*args))
        assert "same file" in message and all(o in message for o in options), (label, message)
        assert_unchanged(before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.csv", "photo.png", "run"]
    assert sorted(p.name for p in run_dir.iterdir()) == ["best.pt", "last.pt"]


def test_a_json_output_kind_reads_a_whole_file_only_when_it_starts_as_an_object(tmp_path, monkeypatch):
    kind = fileio.json_kind("a test file", "checkpoint", "metrics")
    (tmp_path / "bom.json").write_text('\ufeff  {"checkpoint": "c", "metrics": {}, "s4g_output": "written by s4g"}',
                                       encoding="utf-8")
    (tmp_path / "list.json").write_text('[{"checkpoint": "c", "metrics": {}}]')
    (tmp_path / "big.bin").write_bytes(b"PK\x03\x04" + bytes(1 << 20))
    assert kind.matches(tmp_path / "bom.json") and not kind.matches(tmp_path / "list.json")
    parsed = []
    real_load = fileio.json.load
    monkeypatch.setattr(fileio.json, "load", lambda fh: parsed.append(fh.name) or real_load(fh))
    assert not kind.matches(tmp_path / "big.bin") and not kind.matches(tmp_path / "list.json")
    assert parsed == []


def test_replacing_an_output_needs_overwrite(tmp_path):
    pts = coords(tmp_path)
    out = tmp_path / "nb.npz"
    assert invoke("neighbours", "--coords", pts, "--k", "3", "--out", out).exit_code == 0
    before = snapshot(out)
    message = error_paragraph(invoke("neighbours", "--coords", pts, "--k", "4", "--out", out))
    assert "--overwrite" in message and str(out) in message
    assert_unchanged(before)
    assert invoke("neighbours", "--coords", pts, "--k", "4", "--out", out, "--overwrite").exit_code == 0
    with np.load(out) as f:
        assert f["idx"].shape == (20, 4)


def test_synth_never_writes_over_files_it_did_not_write(tmp_path):
    out = tmp_path / "mine"
    (out / "splits").mkdir(parents=True)
    (out / "splits" / "train-19zl.csv").write_text("bingmap/19/0000001.jpg,streetview/panos/0000001.jpg,x\n")
    before = snapshot(out)
    message = error_paragraph(invoke("synth", "--layout", "cvusa", "--out", out, "--locations", "4",
                                     "--workers", "1", "--overwrite"))
    assert "train-19zl.csv" in message and "did not write" in message
    assert_unchanged(before)


def test_evaluations_of_other_views_get_their_own_default_file(run_dir):
    base = ["eval", "--checkpoint", run_dir / "best.pt", "--device", "cpu", "--batch-size", "16"]
    assert invoke(*base).exit_code == 0
    full = run_dir / "eval-cvusa-test.json"
    before = snapshot(full)
    for extra, name in ((["--fov", "90"], "eval-cvusa-test-fov90-north.json"),
                        (["--fov", "90", "--random-heading", "--seed", "3"],
                         "eval-cvusa-test-fov90-random-seed3.json")):
        result = invoke(*base, *extra)
        assert result.exit_code == 0, result.output
        saved = json.loads((run_dir / name).read_text())
        assert saved["fov"] == 90
    assert_unchanged(before)
    # the same evaluation again: its file exists, so --overwrite is needed
    message = error_paragraph(invoke(*base, "--fov", "90"))
    assert "eval-cvusa-test-fov90-north.json" in message and "--overwrite" in message
    assert_unchanged(before)


def test_disk_full_while_saving_a_checkpoint_keeps_the_old_one(run_dir, monkeypatch):
    before = snapshot(run_dir)
    monkeypatch.setattr(fileio, "open", lambda path, mode: FullDisk(path, 4096), raising=False)
    with pytest.raises(OSError) as caught:
        save_checkpoint(run_dir / "best.pt", build_model("convnext_micro"), {"dataset": "cvusa"})
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(run_dir / "best.pt")
    message = paragraph_of(f"error: {caught.value.filename}: {caught.value.strerror}")
    assert "No space left on device" in message and "unchanged" in message
    assert_unchanged(before)
    assert temporaries(run_dir) == []


def test_disk_full_in_a_command_names_the_file(tmp_path, monkeypatch):
    pts = coords(tmp_path)
    out = tmp_path / "nb.npz"
    assert invoke("neighbours", "--coords", pts, "--k", "3", "--out", out).exit_code == 0
    before = snapshot(tmp_path)

    def full_savez(file, **arrays):
        Path(file).write_bytes(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.np, "savez", full_savez)
    message = error_paragraph(invoke("neighbours", "--coords", pts, "--k", "4", "--out", out, "--overwrite"))
    assert str(out) in message and "No space left on device" in message and "Errno" not in message
    assert_unchanged(before)
    assert temporaries(tmp_path) == []


def test_a_writers_own_oserror_is_not_taken_for_a_failed_write(tmp_path):
    """PIL refuses RGBA as JPEG with an OSError that carries no errno: a bug in the caller,
    not the disk; it must keep its message (and traceback), not become an I/O-error paragraph."""
    out = tmp_path / "picture.jpg"
    Image.new("RGB", (4, 4)).save(out)
    before = snapshot(tmp_path)
    with (pytest.raises(OSError, match="cannot write mode RGBA as JPEG") as caught,
          fileio.atomic_path(out, suffix=".jpg") as tmp):
        Image.new("RGBA", (4, 4)).save(tmp, format="JPEG")
    assert caught.value.errno is None and caught.value.filename is None
    assert "could not be written" not in str(caught.value)
    assert_unchanged(before)
    assert temporaries(tmp_path) == []
    # an OSError of the system is still the one-paragraph write error
    with (pytest.raises(OSError, match="could not be written: No space left on device") as caught,
          fileio.atomic_path(out)):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert caught.value.filename == str(out)
    assert_unchanged(before)


def _limit_file_size(limit: int):
    def limit_in_child() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return limit_in_child


@pytest.mark.skipif(resource is None, reason="RLIMIT_FSIZE and SIGXFSZ are POSIX-only; Windows has no file-size limit")
def test_a_write_the_kernel_refuses_is_one_paragraph(run_dir, tmp_path):
    """A real failed write, without root: the file-size limit makes the kernel refuse the
    checkpoint's bytes past 64 KB (EFBIG), as a full disk refuses them (ENOSPC)."""
    before = snapshot(run_dir)
    code = ("import sys\nfrom s4g.model.checkpoint import save_checkpoint\nfrom s4g.model.encoder import build_model\n"
            "try:\n    save_checkpoint(sys.argv[1], build_model('convnext_micro'), {})\n"
            "except OSError as err:\n    print(f'error: {err.filename}: {err.strerror}')\n")
    done = subprocess.run([sys.executable, "-c", code, str(run_dir / "best.pt")], capture_output=True,
                          text=True, env=child_env(), cwd=tmp_path, preexec_fn=_limit_file_size(64 << 10), timeout=600)
    message = paragraph_of(done.stdout + done.stderr)
    assert str(run_dir / "best.pt") in message and "File too large" in message
    assert_unchanged(before)
    assert temporaries(run_dir) == []
    # and through a command: the neighbours file does not fit either
    pts = tmp_path / "many.csv"
    pts.write_text("lat,lon\n" + "".join(f"{i * 1e-3},{i * 2e-3}\n" for i in range(2000)))
    done = subprocess.run(cli_subprocess_args("neighbours", "--coords", str(pts), "--k", "8", "--out",
                                              str(tmp_path / "nb.npz")),
                          capture_output=True, text=True, env=child_env(), cwd=tmp_path,
                          preexec_fn=_limit_file_size(64 << 10), timeout=600)
    assert done.returncode == 2, done.stderr
    message = paragraph_of(done.stderr)
    assert str(tmp_path / "nb.npz") in message and "File too large" in message
    assert not (tmp_path / "nb.npz").exists() and temporaries(tmp_path) == []
