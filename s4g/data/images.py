"""Image decoding: file -> uint8 RGB tensor, with errors that name the file."""

from __future__ import annotations

import os
import warnings

import torch
from torchvision.io import ImageReadMode, decode_image, read_file

from s4g.errors import UserInputError

# torchvision >= 0.29 warns on every decode that TorchCodec will take these functions over;
# they are still the libjpeg-turbo/libpng decoders s4g wants, so the notice is silenced.
warnings.filterwarnings(
    "ignore", message="The image decoding and encoding capabilities of TorchVision are deprecated",
    category=DeprecationWarning,
)


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Decode the image at `path` to a uint8 tensor (3, H, W), RGB.

    Uses torchvision's decoders (libjpeg-turbo for JPEG, libpng, libwebp); grey and RGBA
    inputs are converted to RGB. A missing, truncated or corrupt file raises UserInputError
    naming it.
    """
    path = os.fspath(path)
    try:
        data = read_file(path)
    except (RuntimeError, OSError) as err:
        raise UserInputError(f"cannot read the image file {path!r}: {_reason(err)}") from None
    if data.numel() == 0:
        raise UserInputError(f"the image file {path!r} is empty.")
    try:
        image = decode_image(data, mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError) as err:
        raise UserInputError(
            f"cannot decode the image file {path!r} ({_reason(err)}); it is truncated, corrupt "
            "or not a JPEG/PNG/WebP image. Replace it, or train with skip_bad_images."
        ) from None
    if image.ndim != 3 or image.shape[0] != 3 or image.shape[1] == 0 or image.shape[2] == 0:
        raise UserInputError(f"the image file {path!r} decoded to shape {tuple(image.shape)}, not (3, H, W).")
    return image


def _reason(err: Exception) -> str:
    """The last line of a torch error (drops the C++ source location prefix)."""
    text = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    return text.split(", ")[-1] if "csrc" in text else text
