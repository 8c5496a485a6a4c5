"""One job per command: train (the run), inference (eval and mine), locate."""
