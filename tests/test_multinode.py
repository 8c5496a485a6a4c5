"""Beyond one machine, on one machine: two torchrun agents as two "nodes" (--nnodes 2, c10d
rendezvous on 127.0.0.1, gloo), each with its own cache folder, TMPDIR and working folder and a
shared run folder, train, evaluate and mine exactly as two processes on one node do; a worker
killed mid-epoch under `torchrun --max-restarts 1` is restarted and the run ends with the
weights of an uninterrupted run; a node that cannot read its images stops both nodes with the
file named on each. Every subprocess runs under a timeout; rendezvous ports are retried.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from typer.testing import CliRunner

from s4g import distributed as D
from s4g.app.cli import app
from s4g.app.synth.cache import ensure_world
from s4g.errors import UserInputError
from s4g.runtime import pick_device

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the workers")

S4G = Path(sys.executable).with_name("s4g")  # what `$(which s4g)` names in this environment
# 12 steps an epoch: room to kill a worker inside epoch 2; DSS mines after epochs 1 and 2.
TRAIN = ["train", "--dataset", "synthetic", "--locations", "120", "--aerial-size", "32", "--ground-size", "32", "64",
         "--batch-size", "8", "--eval-batch-size", "32", "--epochs", "3", "--eval-every", "1", "--sampling", "dss",
         "--gps-k", "8", "--neighbour-select", "4", "--neighbour-range", "8", "--log-every", "1", "--device", "cpu"]
RUN_TIMEOUT_S = 420
PORT_TRIES = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_env(node: Path) -> dict[str, str]:
    """A "node": its own cache folder (where the synthetic world goes), /tmp and working folder."""
    for sub in ("cache", "tmp"):
        (node / sub).mkdir(parents=True, exist_ok=True)
    return {**os.environ, "OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(node / "cache"), "TMPDIR": str(node / "tmp"),
            D.TIMEOUT_ENV: "3"}


def _launch(node: Path, torchrun: list[str], args: list) -> tuple[subprocess.Popen, Path]:
    env = _node_env(node)
    log = node / f"out-{time.monotonic_ns()}.txt"
    cmd = [sys.executable, "-m", "torch.distributed.run", *torchrun, str(S4G), *(str(a) for a in args)]
    with open(log, "w") as sink:  # its own session: a timeout ends the agent and its workers
        proc = subprocess.Popen(cmd, cwd=node, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return proc, log


def _finish(launched: list[tuple[subprocess.Popen, Path]]) -> list[tuple[int, str]]:
    """Each agent's (exit code, output); all of them ended when the time runs out, and the
    others as soon as one could not take its rendezvous port (they would wait for it)."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while any(proc.poll() is None for proc, _ in launched):
        lost_port = any(proc.poll() not in (None, 0) and _port_taken(log.read_text()) for proc, log in launched)
        if lost_port or time.monotonic() > deadline:
            for proc, _ in launched:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            if not lost_port:
                outputs = "\n".join(log.read_text()[-3000:] for _, log in launched)
                pytest.fail(f"torchrun did not end within {RUN_TIMEOUT_S} s:\n{outputs}")
        time.sleep(0.2)
    return [(proc.returncode, log.read_text()) for proc, log in launched]


def _port_taken(output: str) -> bool:
    return "address already in use" in output.lower() or "EADDRINUSE" in output


def _two_nodes(tmp: Path, args: list) -> list[tuple[int, str]]:
    """`s4g ARGS` on two one-process "nodes" under tmp/node0 and tmp/node1."""
    for _ in range(PORT_TRIES):
        port = _free_port()
        launched = [_launch(tmp / f"node{n}", [
            "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"s4g-test-{port}",
            # node 0 serves the rendezvous store; both advertise the loopback address
            "--rdzv-conf", f"is_host={int(n == 0)}", "--local-addr", "127.0.0.1"], args) for n in (0, 1)]
        results = _finish(launched)
        if not any(_port_taken(out) for _, out in results):
            return results
    pytest.fail(f"no free rendezvous port in {PORT_TRIES} tries")


def _one_node(node: Path, args: list, *extra: str) -> subprocess.Popen:
    proc, _ = _launch(node, ["--standalone", "--nproc-per-node", "2", *extra], args)
    return proc


def _untimed(path: Path) -> list[dict]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.endswith("_s") and k != "images_per_s"} for r in records]


def _same_run(a: Path, b: Path) -> None:
    """Bit-identical weights, temperature, mined lists and metrics (timings aside)."""
    ca, cb = (torch.load(p / "last.pt", weights_only=True) for p in (a, b))
    assert ca["epoch"] == cb["epoch"] == 3 and ca["step"] == cb["step"] > 0
    for key, value in cb["model"].items():
        assert torch.equal(ca["model"][key], value), key
    assert torch.equal(ca["loss"]["logit_scale"], cb["loss"]["logit_scale"])
    assert torch.equal(ca["neighbours"], cb["neighbours"])
    assert _untimed(a / "metrics.jsonl") == _untimed(b / "metrics.jsonl")


@pytest.fixture(scope="module")
def one_node(tmp_path_factory) -> Path:
    """The run folder of the same run by two processes on one node."""
    tmp = tmp_path_factory.mktemp("one-node")
    res = _finish([_launch(tmp, ["--standalone", "--nproc-per-node", "2"], [*TRAIN, "--out", tmp / "run"])])
    assert res[0][0] == 0, res[0][1][-3000:]
    return tmp / "run"


@contextlib.contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as torchrun's workers (OMP_NUM_THREADS=1): the same float sums
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def test_two_nodes_train_evaluate_and_mine_as_one_node(one_node, tmp_path):
    shared = tmp_path / "shared"
    (rc0, out0), (rc1, out1) = _two_nodes(tmp_path, [*TRAIN, "--out", shared / "run"])
    assert rc0 == rc1 == 0, out0[-3000:] + out1[-3000:]
    _same_run(shared / "run", one_node)
    # each node wrote the synthetic world into its own cache folder
    for n in (0, 1):
        assert len(list((tmp_path / f"node{n}" / "cache" / "s4g").glob("synthetic-*"))) == 1
    both = out0 + out1
    for line in ("baseline (no training)", "epoch 0:", "epoch 3:", "best test R@1", "run directory:"):
        assert both.count(line) == 1, line

    ckpt = shared / "run" / "best.pt"
    (rc0, out0), (rc1, out1) = _two_nodes(tmp_path, ["eval", "--checkpoint", ckpt, "--device", "cpu",
                                                     "--batch-size", "5", "--json", shared / "two.json"])
    assert rc0 == rc1 == 0, out0[-3000:] + out1[-3000:]
    assert (out0 + out1).count("R@1%") == 1
    (rc0, out0), (rc1, out1) = _two_nodes(tmp_path, ["mine", "--checkpoint", ckpt, "--device", "cpu",
                                                     "--batch-size", "5", "--out", shared / "two.npz"])
    assert rc0 == rc1 == 0, out0[-3000:] + out1[-3000:]
    assert (out0 + out1).count("neighbours written to") == 1

    with _one_thread():
        for args in (["eval", "--json", tmp_path / "one.json"], ["mine", "--out", tmp_path / "one.npz"]):
            res = CliRunner().invoke(app, [str(a) for a in [*args, "--checkpoint", ckpt, "--device", "cpu",
                                                            "--batch-size", "5"]])
            assert res.exit_code == 0, res.output
    assert json.loads((shared / "two.json").read_text()) == json.loads((tmp_path / "one.json").read_text())
    with np.load(shared / "two.npz") as two, np.load(tmp_path / "one.npz") as one:
        assert all(np.array_equal(two[key], one[key]) for key in one.files)


def _workers(agent: int) -> dict[int, int]:
    """{global rank: pid} of a torchrun agent's workers (its children that carry a RANK)."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) != agent:
                continue
            env = dict(item.split("=", 1) for item in (proc / "environ").read_text().split("\0") if "=" in item)
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile
        if "RANK" in env:
            found[int(env["RANK"])] = int(proc.name)
    return found


def test_a_worker_killed_mid_epoch_is_restarted_and_the_run_ends_as_if_uninterrupted(one_node, tmp_path):
    run = tmp_path / "run"
    agent = _one_node(tmp_path, [*TRAIN, "--out", run], "--max-restarts", "1")
    deadline, killed = time.monotonic() + RUN_TIMEOUT_S, None
    while killed is None and agent.poll() is None and time.monotonic() < deadline:
        try:
            records = _untimed(run / "metrics.jsonl")
        except (OSError, ValueError):
            records = []
        # the first logged step of epoch 2: 11 of its 12 steps still to go
        if any(r.get("epoch") == 2 and "loss" in r for r in records):
            rank0 = _workers(agent.pid)[0]  # it holds the run folder's lock
            os.kill(rank0, signal.SIGKILL)
            killed = rank0
        time.sleep(0.02)
    (rc, out), = _finish([(agent, max(tmp_path.glob("out-*.txt")))])
    assert killed is not None, out[-3000:]
    assert rc == 0, out[-3000:]
    assert out.count(f"torchrun restart 1: continuing from {run / 'last.pt'} (epoch 1)") == 1, out[-3000:]
    assert "in use" not in out
    _same_run(run, one_node)


def test_a_node_that_cannot_read_its_images_stops_both_nodes_with_the_file_named(tmp_path, monkeypatch):
    # node 1's copy of the world has damaged training panoramas; node 0's is intact (and
    # passes the header check that global rank 0 runs before training)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "node1" / "cache"))
    world = ensure_world(None, locations=120, seed=0)
    for row in (world / "splits" / "train-19zl.csv").read_text().splitlines():
        pano = world / row.split(",")[1]  # training panoramas only: the evaluation at epoch 0 passes
        pano.write_bytes(pano.read_bytes()[:200])
    (rc0, out0), (rc1, out1) = _two_nodes(tmp_path, [*TRAIN, "--out", tmp_path / "shared" / "run"])
    assert rc0 != 0 and rc1 != 0
    for out in (out0, out1):
        assert f"{world / 'streetview' / 'panos'}" in out, out[-3000:]
    # node 0's worker names node 1's file instead of its own broken connection
    assert "[rank0]: Traceback" not in out0 and "Connection reset" not in out0, out0[-3000:]


def _prepare_world(root: str, start) -> None:
    start.wait()  # every process past its checks before any has written: all of them write
    assert ensure_world(root, locations=12, seed=3) == Path(root)


def test_nodes_that_write_one_shared_world_at_once_all_get_it(tmp_path):
    ctx = mp.get_context("spawn")
    root = tmp_path / "shared-cache" / "world"
    start = ctx.Barrier(2)
    # not a Pool: the world's writer starts processes of its own
    procs = [ctx.Process(target=_prepare_world, args=(str(root), start)) for _ in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=RUN_TIMEOUT_S)
    assert [proc.exitcode for proc in procs] == [0, 0]
    assert ensure_world(root, locations=12, seed=3) == root  # complete, the same parameters
    assert [p.name for p in root.parent.iterdir()] == ["world"]  # the other copies are gone


def test_each_local_rank_takes_its_own_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("auto", local_rank=1) == torch.device("cuda:1")
    assert pick_device("cuda", local_rank=0) == torch.device("cuda:0")
    with pytest.raises(UserInputError, match="--nproc-per-node at most"):
        pick_device("auto", local_rank=2)


def test_a_restart_continues_only_the_run_its_own_job_wrote(tmp_path, monkeypatch):
    from rich.console import Console

    from s4g.app.jobs.train.loop import ELASTIC_MARK, _elastic_restart
    from s4g.data import registry as datasets

    env = D.DistEnv(0, 1, 0, torch.device("cpu"))
    console = Console(file=io.StringIO())
    cfg = datasets.train_config("synthetic", out=str(tmp_path))
    assert _elastic_restart(cfg, env, None, False, console) == (None, False)  # not under torchrun

    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "2")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-7")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    with pytest.raises(UserInputError, match="--max-restarts 2: give --out"):
        _elastic_restart(datasets.train_config("synthetic"), env, None, False, console)
    assert _elastic_restart(cfg, env, None, False, console) == (None, False)  # the first attempt

    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    (tmp_path / "config.json").write_text("{}")
    assert _elastic_restart(cfg, env, None, False, console) == (None, False)  # no mark: not its run
    (tmp_path / ELASTIC_MARK).write_text(json.dumps({"run_id": "job-6"}))
    assert _elastic_restart(cfg, env, None, False, console) == (None, False)  # another job's run
    (tmp_path / ELASTIC_MARK).write_text(json.dumps({"run_id": "job-7"}))
    assert _elastic_restart(cfg, env, None, False, console) == (None, True)  # its run, no last.pt yet
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")  # torchrun's default: every job's id
    assert _elastic_restart(cfg, env, None, False, console) == (None, False)
