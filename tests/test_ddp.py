"""Distributed training: 2 gloo processes on CPU train like one process on the same batches,
whole models and ones with frozen parameters (the last block only, LoRA)."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from s4g.app.jobs.train import run
from s4g.app.synth.cache import ensure_world
from s4g.config import TrainConfig
from s4g.data import registry as datasets
from s4g.distributed import DistEnv, rank_share
from s4g.model.encoder import set_trainable
from s4g.model.gradcache import average_gradients
from s4g.model.weights import initial_model

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


# A ViT cut to 2 blocks of width 32 at sizes that are multiples of its patch (14).
VIT = dict(backbone="timm/vit_small_patch14_dinov2", backbone_args=dict(depth=2, embed_dim=32, num_heads=2),
           pretrained=False, head="gem", aerial_size=28, ground_size=(28, 56))


def _recording_worker(rank: int, world: int, port: int, cfg: TrainConfig, record: str) -> None:
    # What each process puts through the all-reduce of gradients: DDP's reducer (built from
    # the parameters that require grad) or the chunked step's average_gradients.
    from s4g.app.jobs.train import step

    reduced: dict[str, int] = {}

    class RecordingDDP(torch.nn.parallel.DistributedDataParallel):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            data = self._get_ddp_logging_data()
            reduced.update(tensors=data["num_parameter_tensors"], bytes=data["total_parameter_size_bytes"])

    def recording_average(params, world_size):
        grads = [p.grad for p in params if p.grad is not None]
        reduced.update(tensors=len(grads), bytes=sum(g.numel() * g.element_size() for g in grads))
        average_gradients(params, world_size)

    torch.nn.parallel.DistributedDataParallel = RecordingDDP  # this spawned process's own modules
    step.average_gradients = recording_average
    _worker(rank, world, port, cfg)
    Path(f"{record}.{rank}.json").write_text(json.dumps(reduced))


# LoRA through DDP's hooks; the last block trained through the chunked step's own averaging.
@pytest.mark.parametrize("frozen", [dict(lora_rank=2, chunk_size=0), dict(train_blocks=1, chunk_size=3)],
                         ids=["lora", "train-blocks-chunked"])
def test_two_gloo_processes_with_frozen_parameters_match_one_process(tmp_path, one_process, frozen):
    cfg = dataclasses.replace(one_process[0], **VIT, **frozen)
    single = run(dataclasses.replace(cfg, out=str(tmp_path / "single")))
    mp.spawn(_recording_worker, args=(2, _free_port(), dataclasses.replace(cfg, out=str(tmp_path / "ddp")),
                                      str(tmp_path / "reduced")), nprocs=2, join=True)

    torch.manual_seed(cfg.seed)  # what build_parts does before building the model
    start = initial_model(cfg.backbone, backbone_args=cfg.backbone_args, head=cfg.head, lora_rank=cfg.lora_rank)
    set_trainable(start, cfg.train_blocks)
    trained = [p for p in start.parameters() if p.requires_grad]
    expected = {"tensors": len(trained) + 1, "bytes": 4 * (sum(p.numel() for p in trained) + 1)}  # + logit_scale
    for rank in (0, 1):
        assert json.loads((tmp_path / f"reduced.{rank}.json").read_text()) == expected
    a = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)
    b = torch.load(single / "last.pt", weights_only=True)
    assert a["step"] == b["step"] > 0
    moved = 0
    for key, value in start.state_dict().items():
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-3, atol=1e-4, msg=key)
        if key in dict(start.named_parameters()) and not dict(start.named_parameters())[key].requires_grad:
            assert torch.equal(a["model"][key], value) and torch.equal(b["model"][key], value), key
        else:
            moved += not torch.equal(a["model"][key], value)
    assert moved > 0
