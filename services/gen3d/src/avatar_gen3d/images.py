"""Uploaded pictures: what they are is decided by decoding them, never by the file name or
the declared type; size in pixels is checked from the header before any decoding, so a
decompression bomb costs nothing."""

import io
import struct
import warnings

from PIL import Image, UnidentifiedImageError

from avatar_gen3d.errors import CorruptImage, ImageTooLarge, UnsupportedImage, UnusableImage

FORMATS = ("PNG", "JPEG", "WEBP")
MIN_SIDE = 16  # pixels: anything smaller has no subject to model
MAX_ASPECT = 20  # a strip thinner than this has no shape either


def checked_picture(data: bytes, max_pixels: int) -> Image.Image:
    """The decoded picture, or UnsupportedImage (415), ImageTooLarge or CorruptImage (422)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            picture = Image.open(io.BytesIO(data), formats=FORMATS)
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
    try:
        picture.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise CorruptImage() from exc
    return picture


def as_png(picture: Image.Image) -> bytes:
    """The stored input: always PNG, whatever came in (the worker reads one format)."""
    out = io.BytesIO()
    picture.convert("RGBA").save(out, format="PNG")
    return out.getvalue()
