"""The chunked step (gradient cache) gives the whole batch's gradients: chunk sizes that do
and do not divide the batch, stochastic depth, loss scaling, 2-process gloo DDP; the choice
of the chunk size; the option's checks.

Tolerance: each gradient tensor agrees with the whole-batch one to 2e-5 of its largest
entry (plus rtol 1e-4). That is float32 rounding: the chunked step convolves smaller batches
and sums in another order, and the measured worst case over these tests is 2.4e-6; the
wrong method (adding per-chunk losses) misses by 46-171 % of each tensor's largest entry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from typer.testing import CliRunner

from s4g.app.cli import app
from s4g.app.jobs.train.step import Parts, TrainStep, batch_gradients, build_parts, train_step
from s4g.app.synth.cache import ensure_world
from s4g.data import registry as datasets
from s4g.distributed import DistEnv
from s4g.model.chunksize import balanced_chunk, largest_fitting, plan_chunks, probe_largest_chunk
from s4g.model.encoder import EmbeddingModel
from s4g.model.loss import InfoNCE

CPU = torch.device("cpu")
PAIRS = 10


def _model(stochastic_depth: float = 0.0) -> EmbeddingModel:
    # A three-stage ConvNeXt small enough for milliseconds a step; layer scale 1 so that every
    # block shapes the gradient.
    torch.manual_seed(0)
    stages = [CNBlockConfig(16, 32, 1), CNBlockConfig(32, 64, 1), CNBlockConfig(64, None, 1)]
    encoder = ConvNeXt(stages, stochastic_depth_prob=stochastic_depth, layer_scale=1.0)
    return EmbeddingModel("test", encoder).to(memory_format=torch.channels_last).train()


def _batch(pairs: int = PAIRS, seed: int = 1, hw: tuple[int, int] = (32, 64)) -> tuple[torch.Tensor, torch.Tensor]:
    # ground (pairs, 3, *hw), aerial (pairs, 3, hw[0], hw[0]), channels-last as the loop feeds them
    gen = torch.Generator().manual_seed(seed)
    ground = torch.randn(pairs, 3, *hw, generator=gen).contiguous(memory_format=torch.channels_last)
    aerial = torch.randn(pairs, 3, hw[0], hw[0], generator=gen).contiguous(memory_format=torch.channels_last)
    return ground, aerial


def _parts(model: EmbeddingModel, chunk: int | None, *, scale: float = 2.0**10, rank: int = 0,
           world: int = 1, autocast=contextlib.nullcontext) -> Parts:
    loss_fn = InfoNCE(rank=rank, world_size=world)
    optimizer = torch.optim.AdamW([*model.parameters(), loss_fn.logit_scale], lr=1e-3)
    # An enabled scaler: the cached embedding gradients must carry the loss scale.
    scaler = torch.amp.GradScaler("cpu", init_scale=scale, enabled=scale != 1.0)
    return Parts(model, loss_fn, optimizer, scaler, autocast, TrainStep(model, loss_fn), chunk=chunk)


def _gradients(parts: Parts, ground: torch.Tensor, aerial: torch.Tensor) -> dict[str, torch.Tensor]:
    """The unscaled gradients batch_gradients leaves, by parameter name ("temperature" too)."""
    params = [p for g in parts.optimizer.param_groups for p in g["params"]]
    parts.optimizer.zero_grad(set_to_none=True)
    batch_gradients(parts, ground, aerial, params)
    parts.scaler.unscale_(parts.optimizer)
    named = [*parts.model.named_parameters(), ("temperature", parts.loss_fn.logit_scale)]
    return {name: p.grad.detach().clone() for name, p in named}


def _assert_same_gradients(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys()
    for name, ref in expected.items():
        assert ref.abs().max() > 0, name  # a gradient that is zero everywhere would prove nothing
        torch.testing.assert_close(got[name], ref, rtol=1e-4, atol=2e-5 * float(ref.abs().max()),
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("chunk", [1, 3, 4, 5, PAIRS])
def test_chunked_gradients_equal_the_whole_batch(chunk):
    ground, aerial = _batch()
    expected = _gradients(_parts(_model(), None), ground, aerial)
    _assert_same_gradients(_gradients(_parts(_model(), chunk), ground, aerial), expected)


def test_adding_per_chunk_losses_would_fail_the_tolerance():
    # The method the gradient cache replaces: InfoNCE on each chunk alone, gradients added.
    ground, aerial = _batch()
    expected = _gradients(_parts(_model(), None), ground, aerial)
    model, loss_fn = _model(), InfoNCE()
    for g, a in zip(ground.split(5), aerial.split(5)):
        (loss_fn(model(g), model(a)) / 2).backward()
    wrong = {name: p.grad for name, p in [*model.named_parameters(), ("temperature", loss_fn.logit_scale)]}
    with pytest.raises(AssertionError):
        _assert_same_gradients(wrong, expected)


def _same_draws_reference(model: EmbeddingModel, ground: torch.Tensor, aerial: torch.Tensor,
                          chunk: int) -> dict[str, torch.Tensor]:
    # The whole batch's loss with one autograd graph, embedding in the chunked step's order
    # (each chunk's ground, then its aerial) so that stochastic depth draws the same masks.
    loss_fn = InfoNCE()
    qs, rs = [], []
    for g, a in zip(ground.split(chunk), aerial.split(chunk)):
        qs.append(model(g))
        rs.append(model(a))
    loss_fn(torch.cat(qs), torch.cat(rs)).backward()
    return {name: p.grad.clone() for name, p in [*model.named_parameters(), ("temperature", loss_fn.logit_scale)]}


def test_stochastic_depth_is_replayed_in_the_second_forward():
    ground, aerial = _batch()
    model = _model(stochastic_depth=0.5)
    with torch.no_grad():  # the depth really is random: two forwards differ
        assert not torch.equal(model(ground), model(ground))
    torch.manual_seed(7)
    expected = _same_draws_reference(model, ground, aerial, chunk=3)
    after_one_pass = torch.rand(4)
    parts = _parts(_model(stochastic_depth=0.5), 3)
    torch.manual_seed(7)
    got = _gradients(parts, ground, aerial)
    _assert_same_gradients(got, expected)
    # the RNG ends where one pass over the chunks left it: the replay is invisible outside
    assert torch.equal(torch.rand(4), after_one_pass)


def test_one_chunk_under_bf16_autocast_is_the_plain_step_exactly():
    ground, aerial = _batch()
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    expected = _gradients(_parts(_model(), None, autocast=bf16), ground, aerial)
    got = _gradients(_parts(_model(), PAIRS, autocast=bf16), ground, aerial)
    for name, ref in expected.items():
        assert torch.equal(got[name], ref), name


def test_train_step_with_chunks_moves_the_weights_as_the_whole_batch():
    cfg = datasets.train_config("synthetic", device="cpu", batch_size=8, chunk_size=3, aerial_size=32,
                                ground_size=(32, 64))
    env = DistEnv(0, 1, 0, CPU)
    chunked, _ = build_parts(cfg, env, None)
    plain, _ = build_parts(dataclasses.replace(cfg, chunk_size=0), env, None)
    assert (chunked.chunk, plain.chunk) == (3, None)
    assert "3 chunks of up to 3 pairs" in chunked.chunk_note and plain.chunk_note is None
    ground, aerial = _batch(8)
    losses = []
    for parts in (chunked, plain):
        params = [p for g in parts.optimizer.param_groups for p in g["params"]]
        losses.append(train_step(parts, ground, aerial, params, cfg.clip_grad, CPU))
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-6, atol=0)
    # .grad still holds what the optimizer used (unscaled, clipped)
    grads = [{name: p.grad for name, p in [*parts.model.named_parameters(), ("temperature", parts.loss_fn.logit_scale)]}
             for parts in (chunked, plain)]
    _assert_same_gradients(*grads)
    # Adam's first step moves each weight by ±lr·g/(|g| + eps): a gradient that rounding
    # tips across zero moves its weight the other way, so weights agree to 2·lr only.
    for (name, a), b in zip(chunked.model.named_parameters(), plain.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=2 * cfg.lr, msg=name)
    torch.testing.assert_close(chunked.loss_fn.logit_scale, plain.loss_fn.logit_scale, rtol=0, atol=2 * cfg.lr)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        ground, aerial = _batch()
        share = PAIRS // world
        rows = slice(rank * share, (rank + 1) * share)
        parts = _parts(_model(), 3, rank=rank, world=world)  # 3 does not divide the share of 5
        grads = _gradients(parts, ground[rows], aerial[rows])
        torch.save(grads, os.path.join(out, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


def test_two_gloo_processes_with_chunks_match_one_process_whole_batch(tmp_path):
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    expected = _gradients(_parts(_model(), None), *_batch())
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for name in expected:  # the averaged gradients are the same on every process
        assert torch.equal(ranks[0][name], ranks[1][name]), name
    _assert_same_gradients(ranks[0], expected)


@pytest.mark.parametrize("limit, upto, expected", [(0, 16, 0), (1, 16, 1), (7, 16, 7), (16, 16, 16),
                                                   (100, 16, 16), (5, 1, 1), (50, 143, 50)])
def test_largest_fitting_bisects_a_monotone_fit(limit, upto, expected):
    tried = []

    def fits(n):
        tried.append(n)
        return n <= limit

    assert largest_fitting(fits, upto) == expected
    assert tried[0] == upto and len(tried) <= 1 + upto.bit_length()


def test_balanced_chunk_keeps_the_number_of_chunks_with_less_memory():
    assert balanced_chunk(128, 50) == 43  # 3 chunks: 43 + 43 + 42
    assert balanced_chunk(128, 64) == 64
    assert balanced_chunk(128, 127) == 64
    assert balanced_chunk(10, 3) == 3
    for share in range(1, 40):
        for largest in range(1, share + 1):
            size = balanced_chunk(share, largest)
            assert size <= largest and -(-share // size) == -(-share // largest)


class _RunsOutAbove(torch.nn.Module):
    """A model that runs out of memory, half-way through its forward, above `limit` images."""

    def __init__(self, model: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.model, self.limit = model, limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.model.encoder.features[0](x)
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"{x.shape[0]} images")
        return self.model(x + 0 * features.mean())


def test_probe_finds_the_largest_chunk_and_leaves_the_model_as_it_was():
    model = _RunsOutAbove(_model(stochastic_depth=0.5), limit=6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kept = torch.ones_like(model.model.encoder.features[0][0].weight)
    model.model.encoder.features[0][0].weight.grad = kept
    optimizer = torch.optim.AdamW(model.parameters())
    torch.manual_seed(3)
    expected_draw = torch.rand(3)
    torch.manual_seed(3)
    largest = probe_largest_chunk(model, optimizer, contextlib.nullcontext, upto=11, ground_hw=(32, 64),
                                  aerial_hw=(32, 32), device=CPU)
    assert largest == 6
    assert torch.equal(torch.rand(3), expected_draw)  # the trials' stochastic depth drew nothing
    for name, p in model.named_parameters():
        assert p.grad is (kept if p is model.model.encoder.features[0][0].weight else None), name
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_auto_on_the_cpu_does_not_chunk():
    cfg = datasets.train_config("synthetic", device="cpu", batch_size=16, chunk_size="auto")
    model = _model()
    plan = plan_chunks(cfg, DistEnv(0, 1, 0, CPU), model, torch.optim.AdamW(model.parameters()),
                       contextlib.nullcontext)
    assert plan.size is None and "no memory probe on the CPU" in plan.note
    plan = plan_chunks(dataclasses.replace(cfg, chunk_size=16), DistEnv(0, 1, 0, CPU), model, None, None)
    assert plan.size is None  # a chunk of the whole share is the plain step


@pytest.mark.parametrize("value, message", [("-1", "--chunk-size -1"), ("half", "--chunk-size 'half'")])
def test_bad_chunk_size_exits_2(tmp_path, value, message):
    res = CliRunner().invoke(app, ["train", "--dataset", "synthetic", "--data-root", str(tmp_path / "w"),
                                   "--chunk-size", value, "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and message in res.output, res.output


def test_chunks_with_batchnorm_are_refused(tmp_path):
    res = CliRunner().invoke(app, ["train", "--dataset", "synthetic", "--data-root", str(tmp_path / "w"),
                                   "--backbone", "resnet18", "--chunk-size", "8", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "BatchNorm" in res.output, res.output
    assert not (tmp_path / "w").exists()  # refused before any work


def test_cli_trains_in_chunks_and_resumes_without(tmp_path):
    world = ensure_world(tmp_path / "world", locations=60, seed=0)
    out = tmp_path / "run"
    tiny = ["--data-root", str(world), "--locations", "60", "--aerial-size", "32", "--ground-size", "32", "64",
            "--batch-size", "8", "--eval-batch-size", "32", "--workers", "0", "--out", str(out)]
    res = CliRunner().invoke(app, ["train", "--dataset", "synthetic", "--epochs", "1", "--chunk-size", "3", *tiny])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "config.json").read_text())["chunk_size"] == 3
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    (record,) = [r for r in lines if r.get("kind") == "chunking"]
    assert record["epoch"] == 1 and record["chunk_size"] == 3 and "3 chunks" in record["note"]
    # the gradients do not depend on the chunk size: a run may continue with another
    res = CliRunner().invoke(app, ["train", "--resume", str(out), "--epochs", "2", "--chunk-size", "0"])
    assert res.exit_code == 0, res.output
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["config"]["chunk_size"] == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_probe_fits_a_capped_gpu_and_gives_the_same_gradients(monkeypatch):
    device, share, hw = torch.device("cuda"), 32, (256, 512)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # float32 convolutions, as on the CPU
    ground, aerial = (t.to(device) for t in _batch(share, hw=hw))

    def parts(chunk):
        p = _parts(_model().to(device), chunk, scale=1.0)
        p.loss_fn.to(device)
        return p

    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    expected = _gradients(parts(None), ground, aerial)
    peak = torch.cuda.max_memory_allocated(device) - base
    cfg = datasets.train_config("synthetic", device="cuda", batch_size=share, chunk_size="auto",
                                aerial_size=hw[0], ground_size=hw)
    total = torch.cuda.get_device_properties(device).total_memory
    # Room for about half the plain step: the probe must choose a chunk, and that chunk must run.
    torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_allocated(device) + peak // 2) / total, device)
    try:
        chunked = parts(None)
        plan = plan_chunks(cfg, DistEnv(0, 1, 0, device), chunked.model, chunked.optimizer, contextlib.nullcontext)
        assert plan.size is not None and 1 <= plan.size < share, plan.note
        chunked.chunk = plan.size
        got = _gradients(chunked, ground, aerial)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
    _assert_same_gradients(got, expected)
