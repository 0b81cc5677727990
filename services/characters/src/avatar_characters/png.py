"""The PNG side of character cards: reading and writing chunks (a card travels as base64 JSON in
a tEXt chunk), checked for size before anything is decoded."""

import base64
import struct
import zlib
from typing import Any

from avatar_characters.errors import BadCard, CardTooLarge
from avatar_shared.json_types import strict_json

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PIXELS = 4096 * 4096  # a card portrait; anything larger is refused before decoding
MAX_CHUNKS = 1024  # real cards have a handful; many tiny ones only cost memory


def chunks_of(png: bytes) -> list[tuple[bytes, bytes]]:
    if not png.startswith(PNG_SIGNATURE):
        raise BadCard("The file is neither a PNG image nor a JSON card.")
    chunks, offset = [], len(PNG_SIGNATURE)
    while offset + 12 <= len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind = png[offset + 4 : offset + 8]
        data = png[offset + 8 : offset + 8 + length]
        if len(data) != length:
            raise BadCard("The PNG file is truncated.")
        chunks.append((kind, data))
        if len(chunks) > MAX_CHUNKS:
            raise BadCard(f"The PNG file has more than {MAX_CHUNKS} chunks.")
        offset += 12 + length
        if kind == b"IEND":
            return chunks
    raise BadCard("The PNG file is truncated (no IEND chunk).")


def check_dimensions(chunks: list[tuple[bytes, bytes]]) -> None:
    if not chunks or chunks[0][0] != b"IHDR" or len(chunks[0][1]) < 8:
        raise BadCard("The PNG file has no valid header chunk.")
    width, height = struct.unpack(">II", chunks[0][1][:8])
    if width * height > MAX_PIXELS:
        raise CardTooLarge(f"The image is {width}x{height}; at most {MAX_PIXELS} pixels.")


def text_chunks(chunks: list[tuple[bytes, bytes]]) -> dict[str, bytes]:
    """The text of each tEXt keyword: the first chunk of it, as SillyTavern's reader
    (character-card-parser.js) takes it, so that a PNG with two gives the same card there."""
    texts: dict[str, bytes] = {}
    for kind, data in chunks:
        if kind == b"tEXt" and b"\0" in data:
            keyword, text = data.split(b"\0", 1)
            texts.setdefault(keyword.decode("latin-1").lower(), text)
    return texts


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_with_cards(png: bytes, cards: dict[str, dict[str, Any]]) -> bytes:
    """`png` with its card chunks replaced by `cards` (keyword -> card), before IEND."""
    kept = [
        (kind, data)
        for kind, data in chunks_of(png)
        if not (kind == b"tEXt" and data.split(b"\0", 1)[0].lower() in (b"chara", b"ccv3"))
    ]
    encoded = [
        (b"tEXt", keyword.encode() + b"\0" + base64.b64encode(_card_json(card)))
        for keyword, card in cards.items()
    ]
    body = kept[:-1] + encoded + kept[-1:]
    return PNG_SIGNATURE + b"".join(_chunk(kind, data) for kind, data in body)


def _card_json(card: dict[str, Any]) -> bytes:
    return strict_json(card).encode()


def placeholder_png(seed: str, size: int = 256) -> bytes:
    """A plain square in a colour derived from `seed`: the portrait of a card with none."""
    digest = zlib.crc32(seed.encode())
    pixel = bytes(((digest >> 16) & 0xFF, (digest >> 8) & 0xFF, digest & 0xFF))
    rows = b"".join(b"\0" + pixel * size for _ in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows, 9))
        + _chunk(b"IEND", b"")
    )
