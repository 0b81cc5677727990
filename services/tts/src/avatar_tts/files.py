"""The audio files on disk: `{ASSETS_DIR}/{user_id}/audio/{file_id}.{ext}`, served as
`/mnt/user_assets/{user_id}/audio/{file_id}.{ext}`.

A new file is written under a temporary name and renamed when whole, so a reader sees the
whole file or none. A second user gets the same content under their own path (a hard link),
so no URL reveals another user.
"""

import asyncio
import os
import re
import secrets
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from avatar_tts.audio import duration_s, fix_streamed_wav
from avatar_tts.errors import FileIdTaken

# Names this service gives out; anything else (`..`, encoded dots, slashes) is not a file.
SAFE_USER = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SAFE_FILE = re.compile(r"^[A-Za-z0-9_-]{8,64}\.(wav|ogg|aac|raw)$")


@dataclass(frozen=True)
class DiskFile:
    """An audio file found on disk (for rebuilding the retention index)."""

    path: Path
    owner: str
    size: int
    last_use: float  # its last change
    inode: str  # `inode_of`: the same for every name (hard link) of the audio


@dataclass(frozen=True)
class StoredAudio:
    path: Path
    media_type: str
    duration: float
    size: int


class AudioWriter:
    """One new file being written; `stored` is set once it is whole."""

    def __init__(self, out: BinaryIO, temp: Path, final: Path, media_type: str) -> None:
        self.out, self.temp, self.final, self.media_type = out, temp, final, media_type
        self.stored: StoredAudio | None = None

    def write(self, chunk: bytes) -> None:
        self.out.write(chunk)


class AudioFolder:
    def __init__(self, root: Path) -> None:
        self.root = root

    def of(self, user_id: str) -> Path:
        return self.root / user_id / "audio"

    def existing(self, user_id: str, file_name: str) -> Path | None:
        """The user's file of that name, if the name is one this service gives out."""
        if not (SAFE_USER.match(user_id) and SAFE_FILE.match(file_name)):
            return None
        path = (self.of(user_id) / file_name).resolve()
        # Checked after resolving symlinks: a link placed in a user's folder (by anyone with
        # disk access) cannot make this serve a file from outside that folder.
        inside = path.is_relative_to(self.of(user_id).resolve())
        return path if inside and path.is_file() else None

    @asynccontextmanager
    async def new_file(self, user_id: str, media_type: str) -> AsyncIterator[AudioWriter]:
        """A file written in the block: made whole when it ends, removed if it fails."""
        folder = self.of(user_id)
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        descriptor, temp_name = tempfile.mkstemp(dir=folder, suffix=".part")
        final = folder / f"{new_file_id()}.{media_type}"
        writer = AudioWriter(os.fdopen(descriptor, "wb"), Path(temp_name), final, media_type)
        try:
            with writer.out:
                yield writer
            writer.stored = await asyncio.to_thread(_finish, writer)
        except BaseException:
            await asyncio.to_thread(writer.temp.unlink, missing_ok=True)
            raise

    def audio_files(self) -> list[DiskFile]:
        """Every audio file on disk (for rebuilding the retention index when Redis lost it)."""
        found = []
        for path in self.root.glob("*/audio/*"):
            if SAFE_USER.match(path.parent.parent.name) and SAFE_FILE.match(path.name):
                with suppress(FileNotFoundError):  # another replica evicted it meanwhile
                    stat = path.stat()
                    owner = path.parent.parent.name
                    found.append(DiskFile(path, owner, stat.st_size, stat.st_mtime, inode_of(stat)))
        return found

    def remove_stale_parts(self, older_than_s: float) -> int:
        """Half-written files left by a process that died mid-synthesis. Younger ones may be
        another replica's work in progress."""
        removed, cutoff = 0, time.time() - older_than_s
        for path in self.root.glob("*/audio/*.part"):
            with suppress(FileNotFoundError):  # another replica finished it meanwhile
                if path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    def taken(self, user_id: str, file_id: str) -> bool:
        return any(self.of(user_id).glob(f"{file_id}.*"))

    async def own_copy(self, audio: StoredAudio, user_id: str, file_id: str | None) -> Path:
        """`audio` under the user's folder: named `file_id`, or a new id."""
        return await asyncio.to_thread(_link, audio, self.of(user_id), file_id)


def inode_of(stat: os.stat_result) -> str:
    """Which audio a file is, the same for all its names (hard links): its inode number,
    with its last change so that a number the file system reuses for new audio is another.
    Not the device: replicas on several machines may see one shared volume as different
    devices."""
    return f"{stat.st_ino}-{stat.st_mtime_ns}"


def audio_url(user_id: str, path: Path) -> str:
    return f"/mnt/user_assets/{user_id}/audio/{path.name}"


def new_file_id() -> str:
    return secrets.token_urlsafe(16)


def _finish(writer: AudioWriter) -> StoredAudio:
    if writer.media_type == "wav":
        fix_streamed_wav(writer.temp)
    writer.temp.replace(writer.final)  # atomic: a reader sees the whole file or none
    final = writer.final
    return StoredAudio(
        final, writer.media_type, duration_s(final, writer.media_type), final.stat().st_size
    )


def _link(audio: StoredAudio, folder: Path, file_id: str | None) -> Path:
    """A new name for the audio; a `file_id` the caller chose must be new too."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{file_id or new_file_id()}.{audio.media_type}"
    if target == audio.path:
        return target
    try:
        os.link(audio.path, target)
    except FileExistsError as exc:
        raise FileIdTaken(file_id or target.stem) from exc
    except OSError:  # another file system: a copy serves as well, made exclusively
        with open(target, "xb") as out:
            out.write(audio.path.read_bytes())
    return target
