"""The options of more than one command, and every choice option, declared once: name (its
s4g.flags.Flag), help, type, choices. A command takes an option by its alias
(`device: Device = None`) or, where the help differs by command, by its factory
(`lists: Annotated[Lists | None, lists_option(...)]`).

Choice options are enums, so a command gets a checked value, --help lists the choices, and a
wrong one exits 2 naming the option and the choices. The names mirror the library's lists
(tests/test_cli_options.py checks that each agrees), which live in modules that import torch or
the synthetic world, both of which `s4g --help` does without.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import typer

from s4g.config import Sampling
from s4g.data import registry as datasets
from s4g.flags import Flag

#: s4g.model.encoder.BACKBONES's names.
BACKBONES = ("convnext_micro", "convnext_micro_ls1", "convnext_tiny", "convnext_small", "convnext_base",
             "convnext_large", "resnet18", "resnet34", "resnet50", "resnet101")
#: The prefix of a timm model name given as --backbone (s4g.model.encoder.TIMM_PREFIX).
TIMM_PREFIX = "timm/"


def _choices(name: str, values: tuple[str, ...]) -> Any:
    return enum.Enum(name, {value: value for value in values}, type=str)


#: The type of every --dataset option: the registry's names, listed in --help and in errors.
DatasetName = _choices("DatasetName", datasets.NAMES)
DATASET_HELP = "; ".join(f"{s.name}: {s.summary}" for s in datasets.DATASETS.values())

# Each mirrors a tuple of the library: s4g.retrieval.released.LISTS, s4g.model.weights.PRETRAINED_FROM,
# s4g.model.heads.HEADS, and s4g.app.synth's LAYOUTS, SIZES, PALETTES, VIGOR_LAYOUTS.
Lists = _choices("Lists", ("s4g", "released"))
PretrainedFrom = _choices("PretrainedFrom", ("timm", "torchvision"))
Head = _choices("Head", ("pool", "cls", "gem", "mixvpr", "salad"))
Layout = _choices("Layout", ("cvusa", "cvact", "vigor", "university"))
ImageSizes = _choices("ImageSizes", ("small", "real"))
Palette = _choices("Palette", ("unique", "paired", "shared"))
VigorLayout = _choices("VigorLayout", ("original", "reference"))

#: --chunk-size as parsed: pairs per chunk (0 = the whole batch at once) or "auto".
ChunkSize = Union[int, Literal["auto"]]  # noqa: UP007 (typer takes no Union: a command annotates it as Any)


def choice(choices: Any) -> Callable[[str], Any]:
    """The parser of a choice option: the enum member of `choices` whose value is given; a
    refusal lists the values ("a, b, c")."""

    def parse(text: str) -> Any:
        if isinstance(text, choices):
            return text
        try:
            return choices(text)
        except ValueError:
            raise typer.BadParameter(f"{text!r}: choose one of {', '.join(m.value for m in choices)}") from None

    return parse


def metavar(choices: Any) -> str:
    """The choices as --help shows them: a|b|c."""
    return "|".join(m.value for m in choices)


def backbone(text: str) -> str:
    """--backbone: one of BACKBONES, or timm/<model name> (the model itself is checked when the
    run builds it, where timm is imported)."""
    if text in BACKBONES or (text.startswith(TIMM_PREFIX) and len(text) > len(TIMM_PREFIX)):
        return text
    raise typer.BadParameter(f"{text!r}: choose one of {', '.join(sorted(BACKBONES))}, or {TIMM_PREFIX}<model name>")


def chunk_size(text: str) -> ChunkSize:
    """--chunk-size N|auto, parsed to an int or "auto"; the int's range is the run's check
    (s4g.app.jobs.train.checks), which also checks a configuration continued or built in code."""
    if isinstance(text, int):  # a default, or a value continued from a run
        return text
    text = str(text).strip().lower()
    if text == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise typer.BadParameter(
            f"{Flag.CHUNK_SIZE} {text!r}: expected a number of pairs per chunk (0 = the whole batch at once) or auto"
        ) from None


LISTS_HELP = ("Neighbour lists: s4g (exact great-circle GPS neighbours, a tile mined by the mean of its "
              "queries; default) or released (the lists the released Sample4Geo code builds: its GPS formula "
              "fed degrees, a tile's last query, lists cut to the range after pulled classes are removed; "
              "needs the s4g[released] extra).")


def lists_option(also: str = "") -> Any:
    """--lists (train, mine, neighbours); `also` ends its help."""
    return typer.Option(Flag.LISTS, parser=choice(Lists), metavar=metavar(Lists), help=LISTS_HELP + also)


def pretrained_from_option() -> Any:
    """--pretrained-from (train)."""
    return typer.Option(Flag.PRETRAINED_FROM, parser=choice(PretrainedFrom), metavar=metavar(PretrainedFrom),
                        help="timm: the paper's convnext_*.fb_in22k_ft_in1k_384 (needs the s4g[timm] extra); "
                             "torchvision: ImageNet-1k at 224 px (default timm).")


def head_option() -> Any:
    """--head (train)."""
    return typer.Option(Flag.HEAD, parser=choice(Head), metavar=metavar(Head),
                        help="Aggregation head: pool (the backbone's own, default), cls, gem, mixvpr or salad "
                             "(docs/backbones.md).")


def sampling_option(default_note: str) -> Any:
    """--sampling (train)."""
    return typer.Option(Flag.SAMPLING, parser=choice(Sampling), metavar=metavar(Sampling),
                        help=f"random, gps or dss ({default_note}).")


def backbone_option(help: str) -> Any:
    """--backbone (train): an s4g backbone or timm/<model name>."""
    return typer.Option(Flag.BACKBONE, parser=backbone, metavar="NAME", help=help)


def chunk_size_option() -> Any:
    """--chunk-size N|auto (train)."""
    return typer.Option(
        Flag.CHUNK_SIZE, parser=chunk_size, metavar="N|auto",
        help="Train the batch on less GPU memory: each process embeds its pairs N at a time and "
             "back-propagates the whole batch's loss chunk by chunk (gradient cache), the same gradients "
             "as the whole batch for about one more forward pass. auto: the largest N that fits the free "
             "GPU memory (a short probe; no chunking on the CPU or when the batch fits). 0: the whole batch "
             "at once (default).")


#: --device of eval, mine, index and locate.
Device = Annotated[str | None, typer.Option(
    Flag.DEVICE, help="cpu, cuda, cuda:N (default: cuda if available).")]
#: --checkpoint of eval and mine.
RunCheckpoint = Annotated[Path | None, typer.Option(
    Flag.CHECKPOINT, help=f"s4g checkpoint (default: best.pt of the newest run under {Flag.RUNS_DIR}).")]
#: --runs-dir of eval and mine.
RunsDir = Annotated[Path, typer.Option(Flag.RUNS_DIR, help="Where runs live (for the default checkpoint).")]
#: --ground-size H W, with the help of the command.
GroundSize = Optional[tuple[int, int]]  # noqa: UP045 (a runtime value: an alias, not an annotation)


def ground_size_option(default_note: str) -> Any:
    """--ground-size H W; `default_note` says where the default comes from."""
    return typer.Option(
        Flag.GROUND_SIZE, metavar="H W",
        help=f"Height and width of the ground image fed to the model, pixels. {default_note}")


def value(option: enum.Enum | None) -> str | None:
    """The text a choice option holds (None when not given)."""
    return None if option is None else str(option.value)


__all__ = ["BACKBONES", "DATASET_HELP", "LISTS_HELP", "ChunkSize", "DatasetName", "Device", "GroundSize", "Head",
           "ImageSizes", "Layout", "Lists", "Palette", "PretrainedFrom", "RunCheckpoint", "RunsDir", "VigorLayout",
           "backbone", "backbone_option", "choice", "chunk_size", "chunk_size_option", "ground_size_option",
           "lists_option", "metavar", "sampling_option", "value"]
