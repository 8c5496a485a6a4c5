"""The exact full-batch InfoNCE gradient with the activation memory of one chunk (gradient cache).

InfoNCE does not decompose over the batch: every embedding's gradient depends on all the
others, so accumulating per-chunk losses would train a different objective. The gradient
cache (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited
Setup") splits the step into three passes instead:

1. embed the batch chunk by chunk without autograd (no activations kept), noting the RNG
   state each chunk started from;
2. compute the loss on the full batch of embeddings and its gradient with respect to every
   embedding (and the temperature);
3. re-run each chunk with autograd, from its noted RNG state, and back-propagate the cached
   embedding gradients into the encoder.

Pass 3 replays pass 1 exactly (same inputs, same weights, same stochastic-depth or dropout
draws), so the parameter gradients are those of the loss on the whole batch, up to float
rounding; the cost is one more forward pass. Under data parallelism the loss of pass 2
gathers every process's embeddings with gradients (s4g.model.loss), so each process caches
∂(Σ_k L_k)/∂(own rows); `average_gradients` then does once what DDP's hooks would do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn

# Gradients are averaged over processes in flat buckets of at most this many bytes: few
# collectives, and a transient copy far smaller than the gradients of a ConvNeXt-B (350 MB).
_BUCKET_BYTES = 64 * 2**20


def rng_devices(device: torch.device) -> list[torch.device]:
    """The devices whose RNG a computation on `device` draws from besides the CPU's
    (torch.random.fork_rng's `devices`)."""
    return [device] if device.type == "cuda" else []


def _rng_state(devices: list[torch.device]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    # The CPU generator too on a GPU: an encoder may draw on the host (it costs a 5 kB copy).
    return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in devices]


def _set_rng_state(state: tuple[torch.Tensor, list[torch.Tensor]], devices: list[torch.device]) -> None:
    torch.set_rng_state(state[0])
    for d, s in zip(devices, state[1]):
        torch.cuda.set_rng_state(s, d)


def cached_backward(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ground: torch.Tensor,
    aerial: torch.Tensor,
    *,
    chunk: int,
    autocast: Callable[[], contextlib.AbstractContextManager],
    scaler: torch.amp.GradScaler,
) -> torch.Tensor:
    """Accumulate into .grad the (scaler-scaled) gradient of loss_fn(model(ground), model(aerial)).

    ground (B, 3, Hg, Wg) and aerial (B, 3, Ha, Wa) on the model's device, row i of each is
    pair i; chunk: pairs embedded together, 1 <= chunk (the last chunk may be smaller).
    The model and loss parameters receive the same gradients as one backward pass of the
    whole batch would give them, the temperature's included; peak activation memory is that
    of `chunk` pairs. The global RNG ends where one pass over the chunks leaves it. Returns
    the detached loss. Averaging over processes is the caller's (average_gradients).
    """
    devices = rng_devices(ground.device)
    grounds, aerials = ground.split(chunk), aerial.split(chunk)
    states, q_parts, r_parts = [], [], []
    with torch.no_grad(), autocast():
        for g, a in zip(grounds, aerials):
            states.append(_rng_state(devices))
            q_parts.append(model(g))
            r_parts.append(model(a))
    query = torch.cat(q_parts).requires_grad_()
    reference = torch.cat(r_parts).requires_grad_()
    del q_parts, r_parts
    with autocast():
        loss = loss_fn(query, reference)
    # Scaling here scales the cached embedding gradients, hence every parameter gradient of
    # pass 3, exactly as one scaled backward of the whole batch would.
    scaler.scale(loss).backward()
    assert query.grad is not None and reference.grad is not None  # leaves that the backward reached
    d_query, d_reference = query.grad.split(chunk), reference.grad.split(chunk)
    with torch.random.fork_rng(devices=devices):  # pass 3 leaves the RNG where pass 1 did
        for g, a, state, dq, dr in zip(grounds, aerials, states, d_query, d_reference):
            _set_rng_state(state, devices)
            with autocast():
                q, r = model(g), model(a)
            torch.autograd.backward((q, r), (dq, dr))
    return loss.detach()


def _buckets(tensors: list[torch.Tensor], limit: int) -> Iterator[list[torch.Tensor]]:
    bucket: list[torch.Tensor] = []
    size = 0
    for t in tensors:
        nbytes = t.numel() * t.element_size()
        if bucket and (size + nbytes > limit or t.dtype != bucket[0].dtype):
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += nbytes
    if bucket:
        yield bucket


def average_gradients(params: list[torch.Tensor], world_size: int) -> None:
    """Replace every .grad in `params` by its mean over the `world_size` processes, as DDP's
    reduction would (one all-reduce per bucket; every process must pass the same list)."""
    grads = [p.grad for p in params if p.grad is not None]
    for bucket in _buckets(grads, _BUCKET_BYTES):
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat)
        flat /= world_size
        for g, piece in zip(bucket, flat.split([g.numel() for g in bucket])):
            g.copy_(piece.view(g.shape))


def broadcast_parameters(module: nn.Module) -> None:
    """Rank 0's parameters and buffers on every process, as DDP makes them at construction."""
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            # Collectives take contiguous tensors; channels-last conv weights are not.
            flat = t if t.is_contiguous() else t.contiguous()
            dist.broadcast(flat, src=0)
            if flat is not t:
                t.copy_(flat)


__all__ = ["average_gradients", "broadcast_parameters", "cached_backward", "rng_devices"]
