"""The procedural world: a 2.5-D city rendered into the exact on-disk layout of each benchmark.

`writer.write_layout` writes a dataset tree (`s4g synth`); `cache.ensure_world` keeps the
built-in world of `--dataset synthetic` (s4g.retrieval.baseline is the colour-histogram
matcher reported beside synthetic results). Nothing outside this package imports its world
or renderers, except the registry's preparer of --dataset synthetic, when a run asks for it.
"""
