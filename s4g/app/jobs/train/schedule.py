"""When things happen in a run: the learning rate per step, and the epochs that evaluate and
re-mine."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from s4g.config import Sampling, TrainConfig


def lr_at(step: int, *, base_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate for optimizer step `step` (0-based).

    Linear warm-up from base_lr/warmup_steps to base_lr over `warmup_steps` steps, then a
    half cosine from base_lr down to 0 at `total_steps`; steps past the end stay at 0.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * progress))


def evaluates_after(epoch: int, epochs: int, eval_every: int) -> bool:
    """Evaluate after training epoch `epoch` (1-based): every eval_every epochs and at the end."""
    return epoch == epochs or (eval_every > 0 and epoch % eval_every == 0)


def mines_after(epoch: int, epochs: int, eval_every: int) -> bool:
    """(Re-)mine DSS neighbours after epoch `epoch`: with each evaluation, never after the last
    epoch (nothing would use them). As in the released training scripts, which produced the
    published numbers: epochs 1..eval_every train on GPS lists, the first mining follows the
    evaluation after epoch eval_every (4 in the paper's presets; --eval-every 1 mines after
    every epoch from epoch 1 on)."""
    return epoch < epochs and evaluates_after(epoch, epochs, eval_every)


@dataclass(frozen=True)
class SamplingPolicy:
    """What --sampling decides in a run: which neighbour lists pack an epoch's batches, and
    after which epochs the model re-mines them."""

    sampling: Sampling
    epochs: int
    eval_every: int

    @classmethod
    def of(cls, cfg: TrainConfig) -> SamplingPolicy:
        return cls(Sampling(cfg.sampling), cfg.epochs, cfg.eval_every)

    def lists(self, mined: bool) -> Literal["none", "gps", "mined"]:
        """The lists of an epoch, given whether mined lists exist: none for random batches, the
        mined DSS lists once there are some, GPS lists before."""
        if self.sampling is Sampling.RANDOM:
            return "none"
        return "mined" if self.sampling is Sampling.DSS and mined else "gps"

    def mines_after(self, epoch: int) -> bool:
        """Whether the model re-mines the lists after training epoch `epoch` (1-based)."""
        return self.sampling is Sampling.DSS and mines_after(epoch, self.epochs, self.eval_every)


__all__ = ["SamplingPolicy", "evaluates_after", "lr_at", "mines_after"]
