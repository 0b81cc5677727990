"""Audio file facts: content types, duration and size (read with mutagen, or counted where
mutagen cannot know: raw PCM, streamed AAC), and the sizes in a streamed WAV's header, which
GPT-SoVITS writes before it knows the length: open-ended while the file is written (so what is
there already plays), the real ones once it is whole."""

import io
import struct
from pathlib import Path

import mutagen

# The formats' media types without their parameters (`content_type` adds raw's).
CONTENT_TYPES = {"wav": "audio/wav", "ogg": "audio/ogg", "aac": "audio/aac", "raw": "audio/x-raw"}
ADTS_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)
AAC_FRAME = 1024  # samples in an AAC frame (a raw data block); also libavcodec's priming
ID_FIL = 6  # the syntax element libavcodec opens a stream's first frame with, naming itself
# The size a WAV being written claims: "to the end of the stream" to players (ffmpeg, so
# Chromium, and Firefox read it so), where api_v2's 0 could mean "no audio".
OPEN_ENDED = 0xFFFFFFFF


def content_type(media_type: str, raw_rate: int) -> str:
    """`raw` is api_v2's bare PCM: 16-bit mono, little-endian (numpy's int16 as it is), at
    the model's rate; never audio/L16, which is big-endian by definition (RFC 2586, 3551)."""
    if media_type == "raw":
        return f"audio/x-raw; format=S16LE; rate={raw_rate}; channels=1"
    return CONTENT_TYPES[media_type]


def duration_s(path: Path, media_type: str, raw_rate: int) -> float:
    """`raw_rate`: the speech server's sample rate (TTS_SAMPLE_RATE): raw PCM says it nowhere."""
    if media_type == "raw":
        return round(path.stat().st_size / (2 * raw_rate), 3)
    if media_type == "aac" and (length := adts_length(path.read_bytes())) is not None:
        return round(length, 3)
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


def adts_length(data: bytes) -> float | None:
    """The length of ADTS AAC as api_v2 makes it (ffmpeg's encoder, libavcodec); None when it
    is not ADTS. Streamed, each piece is packed by an ffmpeg of its own: an ADTS stream whose
    first frame is the encoder's priming (one frame) and names libavcodec (a FIL element
    "Lavc..."), sent back to back, so every piece's priming is left out, not just the first's
    (mutagen counts them all and the padding: 15% long for api_v2's pieces). The padding that
    fills a piece's last frame is recorded nowhere: each piece may come out up to a frame long."""
    offset, frames, streams, rate = 0, 0, 0, 0
    while offset < len(data):
        head = data[offset : offset + 7]
        if len(head) < 7 or head[0] != 0xFF or head[1] & 0xF6 != 0xF0:
            return None  # not an ADTS frame header
        if (index := head[2] >> 2 & 0x0F) >= len(ADTS_RATES):
            return None
        rate = ADTS_RATES[index]
        size = (head[3] & 0x03) << 11 | head[4] << 3 | head[5] >> 5
        start = offset + (7 if head[1] & 0x01 else 9)  # 9: with a CRC
        if size < start - offset:
            return None
        frames += (head[6] & 0x03) + 1
        block = data[start : start + 7]
        if block and block[0] >> 5 == ID_FIL and b"Lavc" in block[2:7]:
            streams += 1
        offset += size
    if not frames:
        return None
    # Without libavcodec's mark: one stream, its priming taken to be libavcodec's all the same.
    return (frames - max(streams, 1)) * AAC_FRAME / rate


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
