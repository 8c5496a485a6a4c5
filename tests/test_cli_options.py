"""The option declarations of s4g/app/cli/options.py: each choice mirrors the library's list,
and the parsers give the types the jobs take."""

from __future__ import annotations

import pytest
import typer

from s4g.app.cli import options


def test_each_choice_option_mirrors_the_library():
    from s4g.app.synth.dense import VIGOR_LAYOUTS
    from s4g.app.synth.world import PALETTES
    from s4g.app.synth.writer import LAYOUTS, SIZES
    from s4g.config import SAMPLINGS, Sampling
    from s4g.model.encoder import BACKBONES, TIMM_PREFIX
    from s4g.model.heads import HEADS
    from s4g.model.weights import PRETRAINED_FROM
    from s4g.retrieval.released import LISTS

    def values(choices):
        return tuple(m.value for m in choices)

    assert values(options.Lists) == LISTS
    assert values(options.PretrainedFrom) == PRETRAINED_FROM
    assert values(options.Head) == HEADS
    assert values(options.Layout) == LAYOUTS
    assert set(values(options.ImageSizes)) == {size for sizes in SIZES.values() for size in sizes}
    assert values(options.Palette) == PALETTES
    assert values(options.VigorLayout) == VIGOR_LAYOUTS
    assert values(Sampling) == SAMPLINGS
    assert set(options.BACKBONES) == set(BACKBONES) and options.TIMM_PREFIX == TIMM_PREFIX


def test_the_parsers():
    assert options.chunk_size("auto") == options.chunk_size(" AUTO ") == "auto"
    assert options.chunk_size("8") == 8 and options.chunk_size("-1") == -1  # the range is the run's check
    with pytest.raises(typer.BadParameter, match="--chunk-size 'half'"):
        options.chunk_size("half")
    assert options.choice(options.Lists)("released") is options.Lists.released
    with pytest.raises(typer.BadParameter, match="choose one of s4g, released"):
        options.choice(options.Lists)("paper")
    assert options.backbone("timm/vit_small_patch14_dinov2") == "timm/vit_small_patch14_dinov2"
    for bad in ("vgg99", "timm/"):
        with pytest.raises(typer.BadParameter, match="choose one of"):
            options.backbone(bad)
    assert options.value(None) is None and options.value(options.Head.gem) == "gem"
