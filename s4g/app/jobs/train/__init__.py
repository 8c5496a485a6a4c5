"""Training: `run(cfg)` trains one run directory; see loop (the run), step (the optimisation
step), data (records and batches), state (checkpoints, RNG, metrics log), schedule, checks."""

from s4g.app.jobs.train.loop import ResumePoint, run

__all__ = ["ResumePoint", "run"]
