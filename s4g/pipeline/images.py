"""Image decoding: file -> uint8 RGB tensor, with errors that name the file; and the cheap
header check that finds unusable images before a run spends time on them.

A JPEG can be decoded at 1/2, 1/4 or 1/8 of its size directly (libjpeg's DCT scaling, through
Pillow's `Image.draft`): the inverse DCT, the chroma upsampling and the colour conversion then
run on the reduced grid; the entropy decoding does not shrink, so the gain depends on how
detailed the image is (≈ 15 % for the photo-like 2048×1024 panoramas of benches/bench_loader.py,
which are resized to 768×384 anyway). `load_image(path, min_size=...)` uses the largest such scale that
keeps the image at least `min_size`, for JPEGs of at least SCALED_DECODE_MIN_PIXELS; everything
else decodes at full size, bit for bit as before (tests/test_images.py states how far a scaled
decode + resize lies from a full decode + resize).
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image

from s4g.data._files import IMAGE_FORMATS
from s4g.errors import UserInputError

# The formats torchvision's decode_image reads (as PIL names them).
DECODABLE = tuple(IMAGE_FORMATS)
# How each of them starts (a WebP: "RIFF", 4 bytes of size, "WEBP").
_SIGNATURES = (b"\xff\xd8", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"RIFF")
# Files whose headers one worker thread reads in a row.
_HEADER_BLOCK = 256

# torchvision >= 0.29 warns on every decode that TorchCodec will take these functions over;
# they are still the libjpeg-turbo/libpng decoders s4g wants, so the notice is silenced.
warnings.filterwarnings(
    "ignore", message="The image decoding and encoding capabilities of TorchVision are deprecated",
    category=DeprecationWarning,
)

# Below a megapixel a full decode is cheap, so scaling gains little there and
# small-image data (the synthetic world's 128 px tiles among them) keeps its exact pixels.
SCALED_DECODE_MIN_PIXELS = 1_000_000
_JPEG_MAGIC = b"\xff\xd8"


def load_image(path: str | os.PathLike, min_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Decode the image at `path` to a uint8 tensor (3, H, W), RGB.

    min_size: (h, w) pixels the caller needs at least (it resizes afterwards). A JPEG of at
    least SCALED_DECODE_MIN_PIXELS is then decoded at the largest DCT scale 1/s (s in 2, 4,
    8) with H // s >= h and W // s >= w, i.e. (ceil(H/s), ceil(W/s)); otherwise, and without
    min_size, at full size. Full-size decodes use torchvision's decoders (libjpeg-turbo,
    libpng, libwebp); grey and RGBA inputs are converted to RGB. A missing, truncated or
    corrupt file raises UserInputError naming it. The tensor may be a channels-last view.
    """
    path = os.fspath(path)
    try:
        # Python reads the bytes: torchvision's read_file cannot take a path that is not UTF-8.
        with open(path, "rb") as fh:
            buffer = bytearray(os.fstat(fh.fileno()).st_size)
            del buffer[fh.readinto(buffer):]
    except OSError as err:
        raise UserInputError(f"cannot read the image file {path!r}: {err.strerror or err}") from None
    if not buffer:
        raise UserInputError(f"the image file {path!r} is empty.")
    if not buffer.startswith(_SIGNATURES) or (buffer.startswith(b"RIFF") and buffer[8:12] != b"WEBP"):
        # torchvision's own message for it is advice about decode_avif and decode_heic
        raise _undecodable(path, f"it does not start as any of them: {bytes(buffer[:12])!r}")
    if min_size is not None and buffer.startswith(_JPEG_MAGIC):
        scaled = _decode_scaled(buffer, path, min_size)
        if scaled is not None:
            return scaled
    try:
        image = decode_image(torch.frombuffer(buffer, dtype=torch.uint8), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError) as err:
        raise _undecodable(path, _reason(err)) from None
    if image.ndim != 3 or image.shape[0] != 3 or image.shape[1] == 0 or image.shape[2] == 0:
        raise UserInputError(f"the image file {path!r} decoded to shape {tuple(image.shape)}, not (3, H, W).")
    return image


def _decode_scaled(data: bytes | bytearray, path: str, min_size: tuple[int, int]) -> torch.Tensor | None:
    """The JPEG decoded at a reduced DCT scale, or None when no scale applies."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            if width * height < SCALED_DECODE_MIN_PIXELS:
                return None
            im.draft("RGB", (max(1, int(min_size[1])), max(1, int(min_size[0]))))
            if im.size == (width, height):
                return None  # no DCT scale keeps min_size: torchvision's full decode is faster
            array = np.array(im.convert("RGB"))
    except Image.DecompressionBombError:
        return None  # Pillow's guard against huge images; torchvision decodes them in full
    except (OSError, ValueError, SyntaxError) as err:
        raise _undecodable(path, str(err) or type(err).__name__) from None
    return torch.from_numpy(array).permute(2, 0, 1)


def _undecodable(path: str, reason: str) -> UserInputError:
    return UserInputError(
        f"cannot decode the image file {path!r} ({reason}); it is truncated, corrupt "
        f"or not a {'/'.join(DECODABLE)} image; replace or remove it."
    )


def _reason(err: Exception) -> str:
    """The last line of a torch error (drops the C++ source location prefix)."""
    text = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    return text.split(", ")[-1] if "csrc" in text else text


def image_problem(path: str | os.PathLike) -> str | None:
    """Why the image at `path` cannot be decoded, judged from its header (Pillow reads a few
    KB) and, for a JPEG, its end-of-image marker; None when it looks usable. Only a PNG, WebP
    or GIF cut short is found when decoded."""
    try:
        with Image.open(path) as image:
            kind, (width, height) = image.format, image.size
    except FileNotFoundError:
        return "no such file"
    except Image.DecompressionBombError:
        return None  # very large but valid: torchvision decodes it
    except Image.UnidentifiedImageError:
        return "not an image of a known format (damaged, cut short, or another kind of file)"
    except (OSError, SyntaxError, ValueError) as err:
        return f"not a readable image ({err.strerror if isinstance(err, OSError) and err.strerror else err})"
    if kind not in DECODABLE:
        return f"a {kind} image, which s4g cannot decode (it reads {', '.join(DECODABLE)})"
    if width < 1 or height < 1:
        return f"an image of {width}x{height} pixels"
    if kind == "JPEG" and not _jpeg_complete(path):
        return "a JPEG cut short: it has no end-of-image marker"
    return None


def _jpeg_complete(path: str | os.PathLike) -> bool:
    """Whether a JPEG file holds its end-of-image marker (FF D9) after its first scan.

    Usually the last two bytes (some writers pad after it): two bytes read. Otherwise the
    segments are walked to the first scan (an EXIF thumbnail, with its own end marker, lies
    in a segment before it), and the marker is looked for after it: the compressed data of a
    scan never holds FF D9 (a data byte FF is followed by 00)."""
    with open(path, "rb") as fh:
        fh.seek(max(0, os.fstat(fh.fileno()).st_size - 64))
        if fh.read().rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
            return True
        fh.seek(0)
        data = fh.read()
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        if data[pos + 1] == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        end = pos + 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        if data[pos + 1] == 0xDA:  # start of scan
            return data.find(b"\xff\xd9", end) >= 0
        pos = end
    return False


def find_bad_images(
    files: Sequence[str], *, threads: int | None = None, advance: Callable[[int], None] | None = None
) -> list[tuple[str, str]]:
    """(path, problem) of each of `files` that image_problem finds unusable, in input order.

    Headers are read by `threads` threads (default: 4 a CPU, at most 32; file opening waits on
    the disk, not the CPU); advance(n) is called as each block of n files is done.
    """
    def block(start: int) -> list[tuple[str, str]]:
        chunk = files[start:start + _HEADER_BLOCK]
        bad = [(f, p) for f in chunk if (p := image_problem(f)) is not None]
        if advance is not None:
            advance(len(chunk))
        return bad

    threads = threads or min(32, 4 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        blocks = list(pool.map(block, range(0, len(files), _HEADER_BLOCK)))
    return [item for found in blocks for item in found]
