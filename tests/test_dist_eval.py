"""Sharded evaluation and mining over 2 gloo processes on CPU.

The sharded path gives exactly one process's embeddings, metrics and neighbour lists (image
counts not divisible by 2, a batch size that leaves one rank without work, duplicated images
whose scores tie exactly); a failure on one rank stops every rank; `torchrun ... s4g eval|mine`
prints once and writes what one process writes; a 2-process training logs what it logged when
rank 0 alone evaluated and mined.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from typer.testing import CliRunner

from s4g import distributed as D
from s4g.app.cli import app
from s4g.app.jobs.inference import evaluate_split, mine_training_set
from s4g.app.jobs.train import loop, run
from s4g.app.synth.cache import ensure_world
from s4g.app.synth.writer import write_layout
from s4g.data import registry as datasets
from s4g.data.registry import load_eval, load_train
from s4g.errors import UserInputError
from s4g.model.checkpoint import load_checkpoint, save_checkpoint
from s4g.model.encoder import build_model
from s4g.pipeline.transforms import View
from s4g.retrieval.embed import embed_files

SIZES = dict(aerial_size=64, ground_size=(32, 64))  # ConvNeXt needs >= 32 px per side
# 1: a copied image embeds to the same bits (elsewhere in a batch it may differ in the last
# bits on the CPU), so scores tie exactly; 4: uneven shares; 64: one batch, rank 0 gets none.
BATCHES = (1, 4, 64)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun_environ(rank: int, world: int, port: int) -> None:
    """What torchrun sets for a worker (one thread each, as torchrun's OMP_NUM_THREADS=1)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    os.environ[D.TIMEOUT_ENV] = "3"  # a rank left waiting fails the test instead of hanging it
    torch.set_num_threads(1)


def _join(rank: int, world: int, port: int) -> D.DistEnv:
    _torchrun_environ(rank, world, port)
    return D.setup("cpu")


@contextlib.contextmanager
def one_thread():
    """The workers' thread count, so that one process computes with the same kernels."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vigor")
    write_layout("vigor", root, locations=40, seed=0, workers=1, overwrite=True)
    return root


@pytest.fixture(scope="module")
def checkpoint(world, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("run") / "best.pt"
    config = {"dataset": "vigor-same", "data_root": str(world), "backbone": "convnext_micro",
              "split_dir": "splits", "eval_split": "test", "batch_size": 3, "neighbour_range": 6,
              "workers": 0, "aerial_size": SIZES["aerial_size"], "ground_size": list(SIZES["ground_size"])}
    save_checkpoint(path, build_model("convnext_micro"), config)
    return path


def tied_sets(root: Path):
    """The world's test split and training set, each with an odd number of images and a
    duplicated image: an extra query (a copy of query 0), an extra reference that copies
    query 0's positive under a distractor label (its score ties the positive's), an extra
    training query (a copy of pair 1) and an extra class whose tile copies class 0's."""
    ev, tr = load_eval("vigor-same", root), load_train("vigor-same", root)
    positive = int(np.flatnonzero(ev.reference_labels == ev.query_labels[0])[0])
    ev = dataclasses.replace(
        ev, query_files=ev.query_files + ev.query_files[:1],
        query_labels=np.append(ev.query_labels, ev.query_labels[0]),
        semi_positives=np.concatenate([ev.semi_positives, ev.semi_positives[:1]]),
        reference_files=ev.reference_files + [ev.reference_files[positive]],
        reference_labels=np.append(ev.reference_labels, ev.reference_labels.max() + 1),
        reference_lat=None, reference_lon=None, query_lat=None, query_lon=None)
    tr = dataclasses.replace(
        tr, query_files=tr.query_files + tr.query_files[1:2], pair_class=np.append(tr.pair_class, tr.pair_class[1]),
        reference_files=tr.reference_files + tr.reference_files[:1],
        class_lat=np.append(tr.class_lat, tr.class_lat[0]), class_lon=np.append(tr.class_lon, tr.class_lon[0]))
    assert len(ev.query_files) % 2 and len(ev.reference_files) % 2 and tr.num_pairs % 2 and tr.num_classes % 2
    return ev, tr


def _jobs(model, ev, tr, batch_size: int, env):
    """(reference embeddings, [results, results of random-heading views with top-5 lists],
    neighbour lists, whether the CPU RNG moved)."""
    common = dict(device="cpu", batch_size=batch_size, progress=False, env=env)
    rng = torch.get_rng_state()
    emb = embed_files(model, ev.reference_files, View(**SIZES), "aerial", **common)
    moved = not torch.equal(rng, torch.get_rng_state())
    views = ({"view": View(**SIZES)},
             {"view": View(**SIZES, fov=180.0, random_heading=True, seed=3), "top_k": 5})  # headings by image index
    metrics = [evaluate_split(model, ev, protocol="sample4geo", **common, **view) for view in views]
    neighbours = mine_training_set(model, tr, k=tr.num_classes - 1, view=View(**SIZES), **common)
    return emb, metrics, neighbours, moved


def same_results(a, b) -> bool:
    """Two SplitResults hold the same metrics and per-query arrays, bit for bit."""
    def bits(results) -> dict:
        fields = {**{f"metrics {k}": v for k, v in results.metrics.items()},
                  **{k: v for k, v in vars(results).items() if k != "metrics"}}
        return {k: None if v is None else (np.asarray(v).dtype.str, np.shape(v), np.asarray(v).tobytes())
                for k, v in fields.items()}

    return bits(a) == bits(b)


def _shard_worker(rank: int, world: int, port: int, root: Path, ckpt: Path, out: Path) -> None:
    env = _join(rank, world, port)
    model, _ = load_checkpoint(ckpt)
    ev, tr = tied_sets(root)
    results = {b: _jobs(model, ev, tr, b, env) for b in BATCHES}
    (out / f"rank{rank}.pkl").write_bytes(pickle.dumps(results))
    D.teardown(env)


def test_batch_shares_are_contiguous_whole_batches():
    for n in range(1, 40):
        for b in (1, 3, 8, 64):
            for w in (1, 2, 3, 8):
                shares = D.batch_shares(n, b, w)
                assert [i for s in shares for i in s] == list(range(n))
                assert all(s.start % b == 0 for s in shares)  # one process's batch boundaries
                sizes = [-(-len(s) // b) for s in shares]  # batches per rank
                assert max(sizes) - min(sizes) <= 1


def test_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(D.TIMEOUT_ENV, raising=False)
    assert D.timeout().total_seconds() == 30 * 60
    monkeypatch.setenv(D.TIMEOUT_ENV, "90")
    assert D.timeout().total_seconds() == 90 * 60
    for bad in ("0", "-1", "soon", "inf", "nan"):
        monkeypatch.setenv(D.TIMEOUT_ENV, bad)
        with pytest.raises(UserInputError, match=D.TIMEOUT_ENV):
            D.timeout()


def test_sharded_jobs_equal_one_process_exactly(world, checkpoint, tmp_path):
    mp.spawn(_shard_worker, args=(2, _free_port(), world, checkpoint, tmp_path), nprocs=2, join=True)
    ranks = [pickle.loads((tmp_path / f"rank{r}.pkl").read_bytes()) for r in range(2)]
    model, _ = load_checkpoint(checkpoint)
    ev, tr = tied_sets(world)
    positive = np.flatnonzero(ev.reference_labels == ev.query_labels[0])[0]
    for b in BATCHES:
        with one_thread():
            emb, metrics, neighbours, moved = _jobs(model, ev, tr, b, None)
        assert np.array_equal(ranks[0][b][0], emb) and ranks[1][b][0] is None
        for rank in ranks:
            assert all(same_results(x, y) for x, y in zip(rank[b][1], metrics))
            assert np.array_equal(rank[b][2], neighbours)
        if b == 1:  # the ties are there, and resolved as one process resolves them
            assert np.array_equal(emb[-1], emb[positive])
            # the copied class ties class 0 in every other class's list: lower id first
            pos = [(list(row).index(0), list(row).index(tr.num_classes - 1)) for row in neighbours[1:-1]]
            assert all(dup == first + 1 for first, dup in pos)
        # rank 0 draws from the CPU RNG as one process does; the others keep theirs
        assert moved and ranks[0][b][3] and not ranks[1][b][3]


def _failure_worker(rank: int, world: int, port: int, files: list[str], out: Path) -> None:
    env = _join(rank, world, port)
    outcome = []
    model = build_model("convnext_micro")
    try:  # the bad file is in rank 1's share
        embed_files(model, files, View(32, (32, 32)), "aerial", device="cpu", batch_size=4, progress=False, env=env)
    except UserInputError as err:
        outcome.append(("embed", str(err)))

    def fail():
        raise UserInputError("rank 0's input is wrong")

    for fn in (fail, lambda: 1 / 0):
        try:
            D.main_result(env, fn)
        except Exception as err:  # noqa: BLE001 - the test records whatever each rank raises
            outcome.append((type(err).__name__, str(err)))
    outcome.append(("after", D.exchange(env, rank)))  # the ranks are still in step
    (out / f"rank{rank}.json").write_text(json.dumps(outcome))
    D.teardown(env)


def test_a_failure_on_one_rank_stops_every_rank(world, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    files = load_eval("vigor-same", world).reference_files[:7] + [str(bad)]
    mp.spawn(_failure_worker, args=(2, _free_port(), files, tmp_path), nprocs=2, join=True)
    outcomes = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rank, outcome in enumerate(outcomes):
        assert outcome[0][0] == "embed" and "broken.png" in outcome[0][1]
        assert outcome[1] == ["UserInputError", "rank 0's input is wrong"]
        assert outcome[2][0] == ("ZeroDivisionError" if rank == 0 else "RuntimeError")
        assert "division by zero" in outcome[2][1]
        assert outcome[3] == ["after", [0, 1]]


def _torchrun(*args) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("s4g")  # what `$(which s4g)` names in this environment
    assert script.is_file(), script
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(script), *(str(a) for a in args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", D.TIMEOUT_ENV: "5"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


def test_torchrun_eval_prints_once_and_writes_one_process_metrics(checkpoint, tmp_path):
    args = ["eval", "--checkpoint", checkpoint, "--device", "cpu", "--batch-size", "3"]
    res = _torchrun(*args, "--json", tmp_path / "two.json", "--per-query", tmp_path / "two.csv")
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("metrics written to") == 1 and res.stdout.count("R@1%") == 1, res.stdout
    with one_thread():
        one = CliRunner().invoke(app, [str(a) for a in args] + ["--json", str(tmp_path / "one.json"),
                                                                "--per-query", str(tmp_path / "one.csv")])
    assert one.exit_code == 0, one.output
    two, one = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("two", "one"))
    assert two == one
    assert (tmp_path / "two.csv").read_text() == (tmp_path / "one.csv").read_text()


def test_torchrun_mine_writes_one_process_lists(world, checkpoint, tmp_path):
    args = ["mine", "--checkpoint", checkpoint, "--device", "cpu", "--batch-size", "3"]
    res = _torchrun(*args, "--out", tmp_path / "two.npz")
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("neighbours written to") == 1, res.stdout
    with one_thread():
        one = CliRunner().invoke(app, [str(a) for a in args] + ["--out", str(tmp_path / "one.npz")])
    assert one.exit_code == 0, one.output
    with np.load(tmp_path / "two.npz") as two, np.load(tmp_path / "one.npz") as ref:
        # k = the checkpoint's neighbour_range
        assert two["neighbours"].shape == (load_train("vigor-same", world).num_classes, 6)
        assert all(np.array_equal(two[key], ref[key]) for key in ref.files)


# A DSS run: GPS lists in epoch 1, lists mined after epoch 4 feed epoch 5 (under either
# mining schedule), evaluations at epochs 0, 4 and 5.
TRAIN = dict(synth_locations=60, aerial_size=32, ground_size=(32, 64), batch_size=8, eval_batch_size=12,
             log_every=2, workers=0, epochs=5, eval_every=4, device="cpu", sampling="dss", gps_k=8,
             neighbour_select=4, neighbour_range=8, augment=True)


def _rank0_alone(fn):
    """fn as the loop ran it before sharding: rank 0 alone, one process's code, the result
    sent to the other ranks."""
    def wrapped(*args, env, **kwargs):
        return D.main_result(env, lambda: fn(*args, env=None, **kwargs))
    return wrapped


def _train_worker(rank: int, world: int, port: int, cfg, sharded: bool) -> None:
    _torchrun_environ(rank, world, port)
    mined = []

    def spy(*args, **kwargs):
        mined.append(kwargs["k"])
        return mine_training_set(*args, **kwargs)

    loop.mine_training_set = spy if sharded else _rank0_alone(spy)
    if not sharded:
        loop.evaluate_split = _rank0_alone(evaluate_split)
    run(cfg)
    if rank == 0:
        (Path(cfg.out) / "mined.json").write_text(json.dumps(mined))


def _untimed(path: Path) -> list[dict]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in records]


def test_two_process_training_logs_what_rank0_evaluation_logged(tmp_path):
    cfg = datasets.train_config("synthetic", **TRAIN)
    root = ensure_world(tmp_path / "world", locations=cfg.synth_locations, seed=cfg.synth_seed)
    runs = {}
    for sharded in (False, True):
        c = dataclasses.replace(cfg, data_root=str(root), out=str(tmp_path / f"sharded-{sharded}"))
        mp.spawn(_train_worker, args=(2, _free_port(), c, sharded), nprocs=2, join=True)
        runs[sharded] = _untimed(Path(c.out) / "metrics.jsonl")
        assert json.loads((Path(c.out) / "mined.json").read_text()), "no mining happened"
    assert [r["epoch"] for r in runs[True] if r.get("kind") == "eval"] == [0, 4, 5]
    assert runs[True] == runs[False]
