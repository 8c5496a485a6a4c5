"""torch Datasets over the loaders' records: training pairs and plain image lists.

Items are uint8 images at the model's size (decoded at a reduced DCT scale where that
suffices: s4g.pipeline.images); normalisation and the photometric augmentation run on the batch on
the training device (s4g.pipeline.augment.augment_batch), 4x fewer bytes to copy than float32.

Randomness is a pure function of (seed, epoch, index): every item builds its own numpy
generator (flip, rotation, heading, photometric parameters), so results do not depend on the
number of workers, on which worker or rank gets which batch, or on the caller's global RNG.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate, get_worker_info

from s4g.data.records import TrainSet
from s4g.errors import UserInputError
from s4g.flags import Flag
from s4g.pipeline.augment import PhotoParams, no_photometric
from s4g.pipeline.images import load_image
from s4g.pipeline.transforms import TrainTransform, View, eval_transform, uncropped_size

BAD_CLASS = -1


def _item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """A numpy generator determined by (seed, epoch, index)."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(1, dtype=np.uint64)
    return np.random.default_rng(int(state[0]))


class BadImageWarning(UserWarning):
    """A training pair was dropped because one of its images could not be decoded."""


class PairDataset(Dataset):
    """Training pairs: item i -> (ground uint8 (3,H,W), aerial uint8 (3,S,S), class id int,
    ground PhotoParams, aerial PhotoParams); augment_batch turns a batch of either view into
    the model's float input.

    train_set: the loader's TrainSet; view: the sizes and the panoramas' field of view
    (transforms.View): the ground view is fed at view.size(train_set.query_kind), after the
    field-of-view cut, which is centred on view.heading_deg (north when None), or on a heading
    drawn per item when view.random_heading; every draw of an item comes from (view.seed,
    epoch, index). augment: paired geometric augmentation and photometric parameters
    (transforms.TrainTransform), else resize only (parameters that only normalise).

    Use with `DataLoader(ds, batch_sampler=batches.tolist(), num_workers=N,
    collate_fn=collate_pairs)`. Call
    set_epoch(e) before creating each epoch's iterator (with persistent_workers the
    workers keep the epoch they were started with).

    An undecodable image raises UserInputError naming the file. With skip_bad_images=True
    the item instead comes back as zero images with class id -1 (BAD_CLASS), a
    BadImageWarning names the file, and `bad_items` counts it in that process;
    `collate_fn=collate_pairs` drops such items from their batch (the batch stays
    class-unique, it is only shorter).
    """

    def __init__(self, train_set: TrainSet, view: View, *, augment: bool = True, skip_bad_images: bool = False):
        self.query_files = list(train_set.query_files)
        self.reference_files = list(train_set.reference_files)
        self.pair_class = np.asarray(train_set.pair_class, dtype=np.int64)
        self.view = view
        self.ground_size, self.aerial_size = view.size(train_set.query_kind), view.aerial_size
        self.transform = TrainTransform(
            view.aerial_size, self.ground_size, query_kind=train_set.query_kind, augment=augment,
            fov_deg=view.fov_of(train_set.query_kind),
        )
        self._decode_ground, self._decode_aerial = self.transform.decode_sizes()
        self.skip_bad_images, self.epoch, self.bad_items = skip_bad_images, 0, 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration draw epoch `epoch`'s augmentations."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.query_files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int, PhotoParams, PhotoParams]:
        index = int(index)
        rng = _item_rng(self.view.seed, self.epoch, index)
        cls = int(self.pair_class[index])
        try:
            ground = load_image(self.query_files[index], self._decode_ground)
            aerial = load_image(self.reference_files[cls], self._decode_aerial)
        except UserInputError as err:
            if not self.skip_bad_images:
                raise UserInputError(f"{err} To train without the pairs whose images cannot be read, "
                                     f"pass {Flag.SKIP_BAD_IMAGES}.") from None
            self.bad_items += 1
            warnings.warn(BadImageWarning(f"skipping training pair {index}: {err}"), stacklevel=2)
            h, w = self.ground_size
            s = self.aerial_size
            zeros = torch.zeros(3, h, w, dtype=torch.uint8), torch.zeros(3, s, s, dtype=torch.uint8)
            return *zeros, BAD_CLASS, no_photometric(), no_photometric()
        heading = float(rng.uniform(0.0, 360.0)) if self.view.random_heading else float(self.view.heading_deg or 0.0)
        ground, aerial, ground_params, aerial_params = self.transform(ground, aerial, rng, heading)
        return ground, aerial, cls, ground_params, aerial_params


def collate_pairs(batch: Sequence[tuple]):
    """A batch of PairDataset items, without the items marked bad (class id -1).

    -> (ground uint8 (B', 3, H, W), aerial uint8 (B', 3, S, S), class ids (B',) int64, ground
    PhotoParams, aerial PhotoParams), B' <= B. The images are stacked channels-last, the
    layout the decoders and the resize leave them in (a plain copy, not a transpose) and the
    model's input layout.
    """
    kept = [item for item in batch if item[2] != BAD_CLASS] or list(batch[:1])
    ground, aerial, cls, ground_params, aerial_params = zip(*kept)
    out = [_stack_channels_last(ground), _stack_channels_last(aerial), torch.tensor(cls, dtype=torch.int64),
           default_collate(list(ground_params)), default_collate(list(aerial_params))]
    if kept[0][2] == BAD_CLASS:  # every item was bad: an empty batch
        return [type(part)(*(t[:0] for t in part)) if isinstance(part, tuple) else part[:0] for part in out]
    return out


def _stack_channels_last(images: Sequence[torch.Tensor]) -> torch.Tensor:
    h, w = images[0].shape[1:]
    out = torch.empty((len(images), h, w, 3), dtype=torch.uint8)
    if get_worker_info() is not None:
        # stacked straight into shared memory, as default_collate does in a worker: the batch
        # then reaches the main process without a second copy
        out.share_memory_()
    torch.stack([image.permute(1, 2, 0) for image in images], out=out)
    return out.permute(0, 3, 1, 2)


class ImageDataset(Dataset):
    """Plain images for embedding: item i -> (uint8 (3, H, W), i); the batch is normalised on
    the model's device (s4g.pipeline.augment.normalise).

    files: image paths, all of one `kind` ("panorama", "drone" or "aerial"), fed at
    view.size(kind) (transforms.View). A panorama is cut to view.fov degrees of horizontal
    field of view, centred at view.heading_deg (None = north), or at a heading drawn uniformly
    from [0, 360) per item from (view.seed, i) when view.random_heading. JPEGs are decoded at
    a reduced DCT scale where that still gives the size (s4g.pipeline.images). An undecodable
    file raises UserInputError naming it.
    """

    def __init__(self, files: Sequence[str], view: View, kind: str):
        fov = view.fov_of(kind)
        if kind == "panorama" and fov is None and (view.heading_deg is not None or view.random_heading):
            raise UserInputError(f"a heading ({Flag.RANDOM_HEADING}) needs a field of view ({Flag.FOV}).")
        self.files = list(files)
        self.view, self.kind, self.fov = view, kind, fov
        self.size_hw = view.size(kind)
        self._apply = eval_transform(self.size_hw, fov)
        self._decode_size = uncropped_size(self.size_hw, fov)

    def heading(self, index: int) -> float:
        """The heading in degrees (clockwise from north) item `index` is cut at."""
        if self.view.random_heading:
            return float(_item_rng(self.view.seed, 0, index).uniform(0.0, 360.0))
        return float(self.view.heading_deg or 0.0)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        index = int(index)
        return self._apply(load_image(self.files[index], self._decode_size), self.heading(index)), index
