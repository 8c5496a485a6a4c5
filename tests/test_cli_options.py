"""The option declarations: the commands' options and s4g.flags.Flag are one set of names, each
choice of s4g/app/cli/options.py mirrors the library's list, and the parsers give the types the
jobs take."""

from __future__ import annotations

import pytest
import typer

from s4g.app.cli import app, options
from s4g.flags import Flag


def _declared_options() -> dict[str, list[str]]:
    """Every option of the app and its commands, as typed, with the commands that take it."""
    root = typer.main.get_command(app)
    found: dict[str, list[str]] = {}
    for name, command in [("s4g", root), *getattr(root, "commands", {}).items()]:
        for param in command.params:
            if param.param_type_name == "option":
                for opt in (*param.opts, *param.secondary_opts):
                    found.setdefault(opt, []).append(name)
    return found


def test_the_options_and_the_flags_are_one_set():
    """A message names an option as a Flag member (a misspelt member fails mypy and the import);
    this keeps each member an option that a command takes, and each option a member."""
    declared = _declared_options()
    flags = {flag.value for flag in Flag}
    assert sorted(set(declared) - flags) == [], "options declared without a Flag member"
    assert sorted(flags - set(declared)) == [], "Flag members that no command takes"
    assert declared[Flag.OVERWRITE] == ["synth", "neighbours", "train", "eval", "mine", "plot", "import-weights",
                                        "index", "locate"]
    assert declared[Flag.VERSION] == ["s4g"]


def test_a_flag_reads_as_typed():
    """In a message, str() and format() of a member give the option as typed, on every Python
    s4g supports (3.12 changed how a str-mixin enum formats)."""
    assert str(Flag.CHUNK_SIZE) == f"{Flag.CHUNK_SIZE}" == "--chunk-size"
    assert f"{Flag.K:>5}|" == "  --k|" and f"{Flag.NO_CHECK_IMAGES}/" == "--no-check-images/"
    assert Flag("--seed") is Flag.SEED and Flag.SEED == "--seed"


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
