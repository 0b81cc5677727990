"""Audio file facts: content types, duration and size (read with mutagen), and the sizes in a
streamed WAV's header, which GPT-SoVITS writes before it knows the length: open-ended while
the file is written (so what is there already plays), the real ones once it is whole."""

import io
import struct
from pathlib import Path

import mutagen

CONTENT_TYPES = {"wav": "audio/wav", "ogg": "audio/ogg", "aac": "audio/aac", "raw": "audio/L16"}
# `raw` is headerless 16-bit mono PCM; GPT-SoVITS v1/v2 speak at 32 kHz.
RAW_BYTES_PER_SECOND = 32_000 * 2
# The size a WAV being written claims: "to the end of the stream" to players (ffmpeg, so
# Chromium, and Firefox read it so), where api_v2's 0 could mean "no audio".
OPEN_ENDED = 0xFFFFFFFF


def duration_s(path: Path, media_type: str) -> float:
    if media_type == "raw":
        return round(path.stat().st_size / RAW_BYTES_PER_SECOND, 3)
    if media_type == "ogg":
        # Streamed, api_v2 packs each piece as an Ogg file of its own, sent back to back: a
        # chain of streams, of which mutagen reads the first.
        data = path.read_bytes()
        return round(sum(_length(io.BytesIO(link)) for link in ogg_chain(data)), 3)
    return round(_length(path), 3)


def _length(audio: Path | io.BytesIO) -> float:
    try:
        info = mutagen.File(audio)
    except mutagen.MutagenError:
        info = None
    length = getattr(getattr(info, "info", None), "length", None)
    return float(length) if length else 0.0


def ogg_chain(data: bytes) -> list[bytes]:
    """The streams of a chained Ogg file, one after another: each begins with a page marked
    "beginning of stream". The whole file as one when its pages cannot be followed."""
    starts, offset = [], 0
    while offset < len(data):
        if data[offset : offset + 4] != b"OggS" or offset + 27 > len(data):
            return [data]
        segments = data[offset + 27 : offset + 27 + data[offset + 26]]
        if data[offset + 5] & 0x02:  # the first page of a stream
            starts.append(offset)
        offset += 27 + len(segments) + sum(segments)
    return [data[a:b] for a, b in zip(starts, [*starts[1:], len(data)], strict=True)] or [data]


def fix_streamed_wav(path: Path) -> None:
    """Write the real RIFF and data sizes into a WAV whose header claimed 0 (or too much)."""
    with path.open("r+b") as wav:
        head = wav.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        size = path.stat().st_size
        offset = 12
        while offset + 8 <= size:
            wav.seek(offset)
            chunk_id, chunk_size = struct.unpack("<4sI", wav.read(8))
            if chunk_id == b"data":
                wav.seek(offset + 4)
                wav.write(struct.pack("<I", size - offset - 8))
                wav.seek(4)
                wav.write(struct.pack("<I", size - 8))
                return
            offset += 8 + chunk_size + (chunk_size & 1)


def open_ended_wav(head: bytes) -> bytes | None:
    """The first bytes of a streamed WAV with its RIFF and data sizes set to OPEN_ENDED; None
    while the data chunk's header is not all there yet. Anything but a WAV comes back as is."""
    if len(head) < 12:
        return None
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return head
    offset = 12
    while offset + 8 <= len(head):
        chunk_id, chunk_size = struct.unpack_from("<4sI", head, offset)
        if chunk_id == b"data":
            patched = bytearray(head)
            struct.pack_into("<I", patched, 4, OPEN_ENDED)
            struct.pack_into("<I", patched, offset + 4, OPEN_ENDED)
            return bytes(patched)
        offset += 8 + chunk_size + (chunk_size & 1)
    return None
