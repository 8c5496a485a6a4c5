"""A run folder is protected: a finished run is not started over by mistake, two trainings
never share a folder, a killed run leaves nothing that blocks or confuses the next start,
and resuming it after SIGKILL mid-write still gives bit-identical weights."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from probes import (
    TINY_ARGS,
    FullDisk,
    assert_unchanged,
    child_env,
    cli_subprocess_args,
    error_paragraph,
    snapshot,
    squash,
    temporaries,
)
from typer.testing import CliRunner

from s4g import fileio
from s4g.app.cli import app
from s4g.app.rundir import LOCK_NAME
from s4g.app.synth.cache import ensure_world

runner = CliRunner()
# Generous bounds for waiting on child processes on a loaded machine (never asserted on).
CHILD_TIMEOUT_S = 900


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return ensure_world(tmp_path_factory.mktemp("synth") / "world", locations=60, seed=0)


def train_args(world: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--dataset", "synthetic", "--data-root", str(world), "--out", str(out), "--epochs", "1",
            *TINY_ARGS, *extra]


def train(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def finished(world, tmp_path_factory) -> Path:
    """A finished one-epoch run (treat as read-only: tests copy it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    result = train(*train_args(world, out))
    assert result.exit_code == 0, result.output
    return out


def copy_run(src: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for f in src.iterdir():
        (dest / f.name).write_bytes(f.read_bytes())
    return dest


def test_a_finished_run_is_not_started_over(world, finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    before = snapshot(run)
    message = error_paragraph(train(*train_args(world, run)))
    assert "already holds a training run" in message and "--resume" in message and "--overwrite" in message
    assert_unchanged(before)
    assert sorted(p.name for p in run.iterdir()) == sorted(Path(p).name for p in before)
    # --overwrite starts over and keeps the earlier files, byte for byte, in replaced-<time>/
    result = train(*train_args(world, run, "--overwrite"))
    assert result.exit_code == 0, result.output
    (moved,) = run.glob("replaced-*")
    for path, data in before.items():
        assert (moved / Path(path).name).read_bytes() == data
    assert (run / "last.pt").is_file() and not (run / LOCK_NAME).exists()


def test_resume_of_a_run_killed_before_its_first_checkpoint(world, finished, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_bytes((finished / "config.json").read_bytes())
    before = snapshot(run)
    message = error_paragraph(train("train", "--resume", str(run)))
    assert "before its first checkpoint" in message and "--overwrite" in message
    assert_unchanged(before)
    message = error_paragraph(train("train", "--resume", str(tmp_path / "nothing")))
    assert "no such run folder" in message


def test_an_older_checkpoint_is_not_continued_in_its_own_folder(world, finished, tmp_path):
    """Continuing from best.pt inside its run would replace last.pt and cut metrics.jsonl back;
    into a new --out it is a branch of the run, and allowed."""
    run = copy_run(finished, tmp_path / "run")
    before = snapshot(run)
    message = error_paragraph(train("train", "--resume", str(run / "best.pt")))
    assert "newer last.pt" in message and squash(f"--resume {run})") in squash(message)
    assert_unchanged(before)
    branch = tmp_path / "branch"
    result = train("train", "--resume", str(run / "best.pt"), "--out", str(branch), "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert_unchanged(before)
    assert (branch / "last.pt").is_file()


@pytest.mark.parametrize("damage, said", [(b'{"epoch": 1, "kind": "eval", "R@1"', "not JSON"),
                                           (b"[1, 2]", "not a JSON object"), (b"\xff\xfe\x00", "not JSON")])
def test_resume_of_a_run_with_a_damaged_metrics_log_names_the_line(world, finished, tmp_path, damage, said):
    run = copy_run(finished, tmp_path / "run")
    lines = (run / "metrics.jsonl").read_bytes().splitlines(keepends=True)
    (run / "metrics.jsonl").write_bytes(b"".join(lines[:2]) + damage + b"\n" + b"".join(lines[2:]))
    before = snapshot(run)
    message = error_paragraph(train("train", "--resume", str(run), "--epochs", "2"))
    assert f"{run / 'metrics.jsonl'}, line 3: {said}" in message
    assert_unchanged(before)  # config.json too: the log is read before anything is written
    assert sorted(p.name for p in run.iterdir()) == sorted(Path(p).name for p in before)


def test_a_missing_out_folder_is_not_left_behind_by_a_refused_run(world, tmp_path):
    out = tmp_path / "new"
    error_paragraph(train(*train_args(world, out, "--batch-size", "100000")))
    assert not out.exists()


# Holds a training process right after it has claimed its run folder, until the file GO
# (argv[1] of the child) exists: the two racing processes meet at the lock however slowly
# the machine runs, with no timing in the test.
HOLD = f"""
import os, sys, time
import s4g.app.jobs.train.loop as loop
go = sys.argv.pop(1)
claimed = loop._prepare
def held(*args, **kwargs):
    cfg = claimed(*args, **kwargs)
    end = time.monotonic() + {CHILD_TIMEOUT_S}
    while not os.path.exists(go) and time.monotonic() < end:
        time.sleep(0.05)
    return cfg
loop._prepare = held
"""


def test_two_trainings_into_one_folder(world, tmp_path):
    out, go = tmp_path / "run", tmp_path / "go"
    args = cli_subprocess_args(str(go), *train_args(world, out), prelude=HOLD)
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=child_env(), cwd=tmp_path)
             for _ in range(2)]
    try:
        end = time.monotonic() + CHILD_TIMEOUT_S
        while all(p.poll() is None for p in procs) and time.monotonic() < end:
            time.sleep(0.1)
        (loser,) = [p for p in procs if p.poll() is not None]
        (winner,) = [p for p in procs if p is not loser]
        _, err = loser.communicate()
        assert loser.returncode == 2, err
        owner = json.loads((out / LOCK_NAME).read_text())
        assert owner["pid"] == winner.pid
        assert f"process {winner.pid} on {owner['host']}" in err and "in use" in err
        go.touch()
        _, err = winner.communicate(timeout=CHILD_TIMEOUT_S)
        assert winner.returncode == 0, err
    finally:
        go.touch()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert (out / "last.pt").is_file() and not (out / LOCK_NAME).exists()


# Kills the training process (SIGKILL) when it is about to rename its second last.pt into
# place: the epoch-2 checkpoint is fully written under its temporary name, the lock is held.
KILL_MID_SAVE = """
import os, signal
import s4g.fileio as fileio
real_replace, saves = os.replace, []
def replace(src, dst):
    if str(dst).endswith("last.pt"):
        saves.append(dst)
        if len(saves) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst)
fileio.os.replace = replace
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"),
                    reason="Windows has no SIGKILL: a process ends by TerminateProcess, exit code 1, not -9")
def test_sigkill_mid_save_resumes_to_the_same_weights(world, tmp_path):
    two = ["--epochs", "2", "--sampling", "dss", "--gps-k", "8", "--neighbour-select", "4", "--neighbour-range", "8"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cli_subprocess_args(*train_args(world, killed), *two, prelude=KILL_MID_SAVE),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(), cwd=tmp_path)
    _, err = proc.communicate(timeout=CHILD_TIMEOUT_S)
    assert proc.returncode == -9, err
    left = temporaries(killed)
    assert len(left) == 1 and left[0].startswith(".last.pt.") and (killed / LOCK_NAME).is_file()
    assert torch.load(killed / "last.pt", weights_only=True)["epoch"] == 1

    resumed = train("train", "--resume", str(killed))
    assert resumed.exit_code == 0, resumed.output
    text = squash(resumed.output)
    assert squash(f"took over the lock {killed / LOCK_NAME} left by process {proc.pid}") in text
    assert squash("removed 1 temporary file") in text and left[0] in text
    assert temporaries(killed) == [] and not (killed / LOCK_NAME).exists()

    straight = tmp_path / "straight"
    assert train(*train_args(world, straight), *two).exit_code == 0
    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(killed / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2 and a["step"] == b["step"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in ("state", "param_groups"):
        assert repr(a["optimizer"][key]) == repr(b["optimizer"][key]), key


def test_a_stale_lock_of_a_dead_process_is_taken_over(world, tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", ""])  # a pid that no longer runs
    gone.wait()
    out = tmp_path / "run"
    out.mkdir()
    stale = {"pid": gone.pid, "host": "elsewhere", "started": "2026-01-01 00:00:00", "command": "s4g train"}
    (out / LOCK_NAME).write_text(json.dumps(stale))
    result = train(*train_args(world, out))
    assert result.exit_code == 0, result.output
    text = squash(result.output)
    assert squash(f"took over the lock {out / LOCK_NAME} left by process {gone.pid} on elsewhere") in text
    assert not (out / LOCK_NAME).exists()


def test_disk_full_while_a_run_saves_its_checkpoint(world, finished, tmp_path, monkeypatch):
    run = copy_run(finished, tmp_path / "run")
    kept = snapshot(run / "last.pt", run / "best.pt")
    real_open = open
    monkeypatch.setattr(fileio, "open", lambda path, mode="r", *a, **kw: FullDisk(path, 4096)
                        if ".last.pt." in str(path) and "w" in mode else real_open(path, mode, *a, **kw), raising=False)
    message = error_paragraph(train("train", "--resume", str(run), "--epochs", "2"))
    assert str(run / "last.pt") in message and "No space left on device" in message and "unchanged" in message
    assert_unchanged(kept)
    assert temporaries(run) == [] and not (run / LOCK_NAME).exists()
