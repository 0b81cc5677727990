"""Uploaded pictures: what they are is decided by decoding them, never by the file name or
the declared type; size in pixels is checked from the header before any decoding, so a
decompression bomb costs nothing; so is a JPEG's number of scans (each is decoded in full
again: a scan repeated thousands of times is a bomb in time, not in memory).

Decoding is what costs memory (4 bytes a pixel and more, whatever the file's size), so a
picture is decoded reduced to at most `max_side` pixels on its longer side: a JPEG straight
at 1/2, 1/4 or 1/8 scale from its DCT coefficients (`draft`: the full-size picture is never
held), other formats whole and then reduced (`resize` with a reducing gap: a box average by
a whole factor first). Nothing downstream needs more: the stored input and a model's
texture are no larger. (The service bounds how many are decoded at once: DECODE_CONCURRENCY.)
"""

import io
import struct
import warnings
from typing import IO

from PIL import Image, UnidentifiedImageError

from avatar_gen3d.errors import (
    CorruptImage,
    ImageTooLarge,
    TooManyScans,
    UnsupportedImage,
    UnusableImage,
)

FORMATS = ("PNG", "JPEG", "WEBP")
MIN_SIDE = 16  # pixels: anything smaller has no subject to model
MAX_ASPECT = 20  # a strip thinner than this has no shape either
# Modes `resize` would treat as colour indices (nearest neighbour only): made colours first.
INDEXED = ("1", "P")
# A JPEG's scans, each decoded in full again: a progressive one has about 10, while a few KB
# of a scan repeated thousands of times in a 10 MB upload would cost a core half an hour.
MAX_JPEG_SCANS = 100
SOS = b"\xff\xda"  # a scan's marker: entropy-coded data escapes its FF bytes, never matches
ORIENTATION = 0x0112  # the EXIF tag
# What turns a picture stored in each EXIF orientation the way up it is shown.
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def fitted(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """`size` scaled down (never up) so its longer side is at most `max_side`."""
    width, height = size
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def jpeg_scale(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """What to ask of a JPEG's `draft`: the least of its reductions (1, 2, 4, 8) that fits
    `max_side`, or 8. (`draft` takes the largest reduction whose size is at least the one
    asked, so the floor of each side is asked.)"""
    for scale in (1, 2, 4, 8):
        if -(-max(size) // scale) <= max_side:
            break
    return size[0] // scale, size[1] // scale


def jpeg_scans(source: IO[bytes], most: int) -> int:
    """A JPEG's scans (its SOS markers) counted on its bytes, up to `most` + 1; the file is
    left where it was. (A thumbnail or profile in its header may count a few more.)"""
    start = source.tell()
    source.seek(0)
    count, tail = 0, b""
    while count <= most and (chunk := source.read(1 << 20)):
        count += (tail + chunk).count(SOS)  # one byte of the last chunk: a split marker
        tail = chunk[-1:]
    source.seek(start)
    return count


def eight_bit(picture: Image.Image) -> Image.Image:
    """A 16-bit greyscale PNG (modes I;16..., or I) scaled to 8 bits (L): every conversion to
    a colour mode clips its 0-65535 shades at 255, which keeps almost nothing but white."""
    if not picture.mode.startswith("I"):
        return picture
    return picture.convert("I").point(lambda shade: shade / 256).convert("L")


def upright(picture: Image.Image) -> Image.Image:
    """The picture the way up it is shown: a phone stores a portrait photo's pixels landscape
    and says so in EXIF (Orientation), which the stored PNG no longer carries. Only the tag
    is read (ImageOps.exif_transpose writes the whole EXIF back, which fails on a damaged
    block); a block too damaged to read leaves the picture as it is stored."""
    try:
        orientation = picture.getexif().get(ORIENTATION)
    except Exception:  # Pillow's EXIF reader fails in many ways on damaged data
        return picture
    method = UPRIGHT.get(orientation) if isinstance(orientation, int) else None
    return picture if method is None else picture.transpose(method)


def checked_picture(data: bytes | IO[bytes], max_pixels: int, max_side: int) -> Image.Image:
    """The decoded picture, at most `max_side` pixels on its longer side, or
    UnsupportedImage (415), ImageTooLarge or CorruptImage (422)."""
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            picture: Image.Image = Image.open(source, formats=FORMATS)
    except UnidentifiedImageError as exc:
        raise UnsupportedImage() from exc
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageTooLarge(max_pixels) from exc
    except (OSError, ValueError, SyntaxError, struct.error) as exc:  # cut off in its header
        raise CorruptImage() from exc
    width, height = picture.size
    if width * height > max_pixels:
        raise ImageTooLarge(max_pixels, (width, height))
    if min(width, height) < MIN_SIDE or max(width, height) > MAX_ASPECT * min(width, height):
        raise UnusableImage(width, height)
    # MPO: a JPEG with more pictures (many phones' photos), read by the same decoder.
    jpeg = picture.format in ("JPEG", "MPO")
    if jpeg and (scans := jpeg_scans(source, MAX_JPEG_SCANS)) > MAX_JPEG_SCANS:
        raise TooManyScans(scans, MAX_JPEG_SCANS)
    try:
        picture.draft(None, jpeg_scale(picture.size, max_side))  # the others ignore it
        picture.load()
        picture = eight_bit(upright(picture))
        if max(picture.size) > max_side:
            if picture.mode in INDEXED:
                picture = picture.convert("RGBA")
            target = fitted(picture.size, max_side)
            picture = picture.resize(target, Image.Resampling.LANCZOS, reducing_gap=2.0)
    except (OSError, ValueError, SyntaxError) as exc:
        raise CorruptImage() from exc
    return picture


def as_png(picture: Image.Image) -> bytes:
    """The stored input: always PNG, whatever came in (the worker reads one format)."""
    out = io.BytesIO()
    picture.convert("RGBA").save(out, format="PNG")
    return out.getvalue()
