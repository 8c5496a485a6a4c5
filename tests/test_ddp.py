"""Distributed training: 2 gloo processes on CPU train like one process on the same batches."""

from __future__ import annotations

import dataclasses
import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from s4g.app.jobs.train import run
from s4g.app.synth.cache import ensure_world
from s4g.config import TrainConfig
from s4g.data import registry as datasets
from s4g.distributed import DistEnv, rank_share

TINY = dict(synth_locations=60, aerial_size=32, ground_size=(32, 64), batch_size=8,
            eval_batch_size=32, log_every=2, workers=0, epochs=1, device="cpu", sampling="gps",
            gps_k=8, neighbour_select=4, augment=True)


def test_rank_share_splits_each_global_batch():
    batches = np.arange(24).reshape(3, 8)
    parts = [rank_share(batches, DistEnv(r, 4, r, torch.device("cpu"))) for r in range(4)]
    assert all(p.shape == (3, 2) for p in parts)
    assert np.array_equal(np.concatenate(parts, axis=1), batches)
    with pytest.raises(ValueError, match="divisible"):
        rank_share(batches, DistEnv(0, 3, 0, torch.device("cpu")))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, cfg: TrainConfig) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    run(cfg)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The synthetic config and the run directory of one process training it."""
    tmp = tmp_path_factory.mktemp("ddp")
    cfg = datasets.train_config("synthetic", **TINY)
    world_dir = ensure_world(tmp / "world", locations=cfg.synth_locations, seed=cfg.synth_seed)
    cfg = dataclasses.replace(cfg, data_root=str(world_dir))
    return cfg, run(dataclasses.replace(cfg, out=str(tmp / "single")))


# chunk 3: the gradient cache in chunks that do not divide the 4 pairs of each process, with
# the gradients averaged once after the last backward instead of by DDP's hooks
@pytest.mark.parametrize("chunk", [0, 3])
def test_two_gloo_processes_match_one_process(tmp_path, one_process, chunk):
    cfg, single = one_process
    ddp_cfg = dataclasses.replace(cfg, out=str(tmp_path / "ddp"), chunk_size=chunk)
    mp.spawn(_worker, args=(2, _free_port(), ddp_cfg), nprocs=2, join=True)

    for name in ("config.json", "metrics.jsonl", "last.pt", "best.pt"):
        assert (tmp_path / "ddp" / name).is_file(), name
    a = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)
    b = torch.load(single / "last.pt", weights_only=True)
    assert a["step"] == b["step"] > 0
    # Same global batches, same per-item augmentation, gathered loss: the same training up
    # to floating-point summation order.
    for key, value in b["model"].items():
        torch.testing.assert_close(a["model"][key], value, rtol=1e-3, atol=1e-4, msg=key)
    torch.testing.assert_close(a["loss"]["logit_scale"], b["loss"]["logit_scale"], rtol=1e-4, atol=1e-5)
    lines = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines if r.get("kind") == "eval"] == [0, 1]
    assert [r["chunk_size"] for r in lines if r.get("kind") == "chunking"] == ([3] if chunk else [])
