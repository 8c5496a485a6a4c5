"""torch Datasets over the loaders' records: training pairs and plain image lists.

Randomness is a pure function of (seed, epoch, index): every item builds its own numpy
generator (flip, rotation, heading) and reseeds torch's CPU generator (photometric ops)
inside `torch.random.fork_rng`, so results do not depend on the number of workers, on
which worker gets which batch, or on the caller's global RNG.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from s4g.data.images import load_image
from s4g.data.records import TrainSet
from s4g.data.transforms import TrainTransform, check_fov, eval_transform
from s4g.errors import UserInputError

BAD_CLASS = -1


def _item_rng(seed: int, epoch: int, index: int) -> tuple[np.random.Generator, int]:
    """A numpy generator and a torch seed, both determined by (seed, epoch, index)."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(2, dtype=np.uint64)
    return np.random.default_rng(int(state[0])), int(state[1] >> np.uint64(1))


class BadImageWarning(UserWarning):
    """A training pair was dropped because one of its images could not be decoded."""


class PairDataset(Dataset):
    """Training pairs: item i -> (ground float32 (3,H,W), aerial float32 (3,S,S), class id int).

    train_set: the loader's TrainSet; aerial_size: S; ground_size: (H, W) of the ground view
    fed to the model (after the field-of-view crop when fov is set). augment: paired
    geometric + photometric augmentation (transforms.TrainTransform), else resize+normalise.
    fov: horizontal field of view in degrees for panoramas (None = full 360); the crop is
    centred on north, or on a random heading per item when random_heading.

    Use with `DataLoader(ds, batch_sampler=batches.tolist(), num_workers=N)`. Call
    set_epoch(e) before creating each epoch's iterator (with persistent_workers the
    workers keep the epoch they were started with).

    An undecodable image raises UserInputError naming the file. With skip_bad_images=True
    the item instead comes back as zero images with class id -1 (BAD_CLASS), a
    BadImageWarning names the file, and `bad_items` counts it in that process; pass
    `collate_fn=collate_pairs` to the DataLoader to drop such items from their batch (the
    batch stays class-unique, it is only shorter).
    """

    def __init__(
        self,
        train_set: TrainSet,
        aerial_size: int,
        ground_size: tuple[int, int],
        *,
        augment: bool = True,
        fov: float | None = None,
        random_heading: bool = False,
        skip_bad_images: bool = False,
        seed: int = 0,
    ):
        self.query_files = list(train_set.query_files)
        self.reference_files = list(train_set.reference_files)
        self.pair_class = np.asarray(train_set.pair_class, dtype=np.int64)
        self.transform = TrainTransform(
            aerial_size, ground_size, query_kind=train_set.query_kind, augment=augment,
            fov_deg=fov if train_set.query_kind == "panorama" else None,
        )
        self.aerial_size, self.ground_size = int(aerial_size), tuple(int(v) for v in ground_size)
        self.random_heading, self.skip_bad_images = random_heading, skip_bad_images
        self.seed, self.epoch, self.bad_items = int(seed), 0, 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration draw epoch `epoch`'s augmentations."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.query_files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        index = int(index)
        rng, torch_seed = _item_rng(self.seed, self.epoch, index)
        cls = int(self.pair_class[index])
        try:
            ground = load_image(self.query_files[index])
            aerial = load_image(self.reference_files[cls])
        except UserInputError as err:
            if not self.skip_bad_images:
                raise UserInputError(f"{err} To train without the pairs whose images cannot be read, "
                                     "pass --skip-bad-images.") from None
            self.bad_items += 1
            warnings.warn(BadImageWarning(f"skipping training pair {index}: {err}"), stacklevel=2)
            h, w = self.ground_size
            s = self.aerial_size
            return torch.zeros(3, h, w), torch.zeros(3, s, s), BAD_CLASS
        heading = float(rng.uniform(0.0, 360.0)) if self.random_heading else 0.0
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(torch_seed)
            ground, aerial = self.transform(ground, aerial, rng, heading)
        return ground, aerial, cls


def collate_pairs(batch: Sequence[tuple[torch.Tensor, torch.Tensor, int]]):
    """default_collate without the items PairDataset marked bad (class id -1).

    -> (ground (B', 3, H, W), aerial (B', 3, S, S), class ids (B',) int64), B' <= B.
    """
    kept = [item for item in batch if item[2] != BAD_CLASS]
    if not kept:
        first = batch[0]
        return (
            first[0].new_zeros((0, *first[0].shape)),
            first[1].new_zeros((0, *first[1].shape)),
            torch.zeros(0, dtype=torch.int64),
        )
    return default_collate(kept)


class ImageDataset(Dataset):
    """Plain images for embedding: item i -> (float32 (3, H, W) ImageNet-normalised, i).

    files: image paths; size_hw: (H, W) output size (after the field-of-view crop). fov:
    degrees of horizontal field of view cut from each (panorama) image, centred at
    heading_deg (default 0 = north), or at a heading drawn uniformly from [0, 360) per item
    from (seed, i) when random_heading. An undecodable file raises UserInputError naming it.
    """

    def __init__(
        self,
        files: Sequence[str],
        size_hw: tuple[int, int],
        *,
        fov: float | None = None,
        heading_deg: float | None = None,
        random_heading: bool = False,
        seed: int = 0,
    ):
        check_fov(fov)
        if fov is None and (heading_deg is not None or random_heading):
            raise UserInputError("a heading (--random-heading) needs a field of view (--fov).")
        self.files = list(files)
        self.size_hw = (int(size_hw[0]), int(size_hw[1]))
        self.fov, self.heading_deg, self.random_heading, self.seed = fov, heading_deg, random_heading, int(seed)
        self._apply = eval_transform(self.size_hw, fov)

    def heading(self, index: int) -> float:
        """The heading in degrees (clockwise from north) item `index` is cut at."""
        if self.random_heading:
            return float(_item_rng(self.seed, 0, index)[0].uniform(0.0, 360.0))
        return float(self.heading_deg or 0.0)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        index = int(index)
        return self._apply(load_image(self.files[index]), self.heading(index)), index
