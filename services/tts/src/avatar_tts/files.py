"""The audio files on disk: `{ASSETS_DIR}/{user_id}/audio/{file_id}.{ext}`, served as
`/mnt/user_assets/{user_id}/audio/{file_id}.{ext}`.

A new file is written as `{file_id}.{ext}.part`, flushed chunk by chunk, and renamed to its
own name when whole: a download of the own name finds the whole file, or the part while it is
written (`follow` streams it as it grows: the speech plays while it is being made), or
nothing. A part is judged by its own last write: one not written for the idle limit (its
writer died, say a replica killed mid-synthesis) is stale: not served, and swept. A second
user gets the same content under their own path (a hard link), so no URL reveals another
user. A user's folders go with their last file (`remove`): whatever writes there makes its
folder again if it went meanwhile (`_in_folder`).
"""

import asyncio
import errno
import os
import re
import secrets
import shutil
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

from avatar_tts.audio import duration_s, fix_streamed_wav, open_ended_wav
from avatar_tts.errors import FileIdTaken, TtsError

# Names this service gives out; anything else (`..`, encoded dots, slashes) is not a file.
SAFE_USER = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SAFE_FILE = re.compile(r"^[A-Za-z0-9_-]{8,64}\.(wav|ogg|aac|raw)$")
PART = ".part"  # the suffix of a file being written
MAX_WAV_HEAD = 4096  # a WAV whose data chunk starts later is written as it comes
FOLDER_TRIES = 3  # a folder removed (emptied by an eviction) this often as it was made: fail
# How often `follow` looks for more bytes when no write on this replica woke it (the writer
# may be another replica on the shared volume).
FOLLOW_POLL_S = 0.2
READ_BYTES = 64 * 1024
T = TypeVar("T")


@dataclass(frozen=True)
class DiskFile:
    """An audio file found on disk (for rebuilding the retention index)."""

    path: Path
    owner: str
    size: int
    last_use: float  # its last change
    inode: str  # `inode_of`: the same for every name (hard link) of the audio


class AudioGone(Exception):
    """The audio to give a new name was removed meanwhile (evicted by another request)."""


@dataclass(frozen=True)
class StoredAudio:
    path: Path
    media_type: str
    duration: float
    size: int


class Wakeups:
    """Wakes this replica's readers of a part (`follow`) when its writer writes, finishes or
    gives up. An event per part, kept only while a reader waits on it."""

    def __init__(self) -> None:
        self._events: weakref.WeakValueDictionary[Path, asyncio.Event] = (
            weakref.WeakValueDictionary()
        )

    def event(self, part: Path) -> asyncio.Event:
        """Set by the part's next change: taken before looking, so none is missed."""
        if (event := self._events.get(part)) is None:
            event = self._events[part] = asyncio.Event()
        return event

    def changed(self, part: Path) -> None:
        if (event := self._events.pop(part, None)) is not None:
            event.set()


class AudioWriter:
    """One new file being written, each chunk flushed for readers (`follow`); `stored` is set
    once it is whole. A WAV's header goes out open-ended, so what is there already plays: the
    bytes to pass on as they come are those `write` and `end` return, the file's own."""

    def __init__(
        self, out: BinaryIO, temp: Path, final: Path, media_type: str, wakeups: Wakeups
    ) -> None:
        self.out, self.temp, self.final, self.media_type = out, temp, final, media_type
        self.wakeups = wakeups
        self.stored: StoredAudio | None = None
        self._head: bytes | None = b"" if media_type == "wav" else None  # until it is written

    def write(self, chunk: bytes) -> bytes:
        """Writes `chunk`; returns what it wrote (none while a WAV's header is not all there,
        then the header as patched with what followed it)."""
        if self._head is not None:
            self._head += chunk
            header = open_ended_wav(self._head)
            if header is None and len(self._head) < MAX_WAV_HEAD:
                return b""  # the header is not all there yet
            chunk, self._head = header or self._head, None
        self.out.write(chunk)
        self.out.flush()
        self.wakeups.changed(self.temp)
        return chunk

    def end(self) -> bytes:
        """At the end of the stream: writes what `write` held back (a stream too short for
        a whole WAV header) and returns it."""
        head, self._head = self._head or b"", None
        return self.write(head) if head else b""

    def close(self) -> None:
        if self._head:  # a stream too short for a whole header, not ended by `end`
            self.out.write(self._head)
        self.out.close()


class AudioFolder:
    def __init__(self, root: Path, idle_s: float, raw_rate: int) -> None:
        """`idle_s`: a part not written for longer is stale (its writer is gone); `raw_rate`:
        the sample rate of raw PCM (for its duration)."""
        self.root, self.idle_s, self.raw_rate = root, idle_s, raw_rate
        self.wakeups = Wakeups()

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

    def being_written(self, user_id: str, file_name: str) -> Path | None:
        """The part of the user's file of that name while it is being written: None when
        there is none, or it is stale (its writer is gone: the file failed)."""
        if not (SAFE_USER.match(user_id) and SAFE_FILE.match(file_name)):
            return None
        part = (self.of(user_id) / (file_name + PART)).resolve()
        if not part.is_relative_to(self.of(user_id).resolve()):
            return None
        try:
            return None if is_stale(part.stat(), self.idle_s) else part
        except FileNotFoundError:
            return None

    @asynccontextmanager
    async def new_file(
        self, user_id: str, media_type: str, file_id: str | None = None
    ) -> AsyncIterator[AudioWriter]:
        """A file written in the block (named `file_id`, else a new id): made whole when it
        ends, removed if it fails."""
        final = self.of(user_id) / f"{file_id or new_file_id()}.{media_type}"
        temp = final.with_name(final.name + PART)
        out = await asyncio.to_thread(_in_folder, lambda: temp.open("xb"), temp)
        writer = AudioWriter(out, temp, final, media_type, self.wakeups)
        try:
            try:
                yield writer
            finally:
                writer.close()
            writer.stored = await asyncio.to_thread(_finish, writer, self.raw_rate)
        except BaseException:
            await asyncio.to_thread(writer.temp.unlink, missing_ok=True)
            raise
        finally:
            self.wakeups.changed(temp)  # whole or given up: its readers look

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

    def remove_stale_parts(self) -> int:
        """Half-written files left by a process that died mid-synthesis: not written for the
        idle limit. Fresher ones are work in progress (this replica's or another's)."""
        removed = 0
        for path in self.root.glob("*/audio/*.part"):
            with suppress(FileNotFoundError):  # another replica finished it meanwhile
                if is_stale(path.stat(), self.idle_s):
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    async def follow(self, part: Path) -> AsyncGenerator[bytes, None] | None:
        """The bytes of a file being written (`part`), as they are written, until it is
        whole (renamed to its own name): None when there is no such part any more. A writer
        that gives up (the part removed, no whole file) or whose part has not been written
        for the idle limit breaks the stream off with TtsError, so that the reader's copy is
        seen to be incomplete."""
        try:
            source = await asyncio.to_thread(part.open, "rb")
        except FileNotFoundError:  # whole, or given up, since it was looked for
            return None
        return self._follow(source, part)

    async def _follow(self, source: BinaryIO, part: Path) -> AsyncGenerator[bytes, None]:
        final = part.with_name(part.name.removesuffix(PART))
        with source:  # the file, whatever its name: a rename does not change what it reads
            while True:
                changed = self.wakeups.event(part)  # before reading: no write is missed
                if chunk := await asyncio.to_thread(source.read, READ_BYTES):
                    yield chunk
                    continue
                state = await asyncio.to_thread(_part_state, part, final, self.idle_s)
                if state == "growing":  # woken by this replica's writer, else a poll
                    with suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), FOLLOW_POLL_S)
                    continue
                if state == "stale":
                    raise TtsError("The audio being made stopped growing.")
                if state == "failed":
                    raise TtsError("The speech server failed while this audio was being made.")
                while chunk := await asyncio.to_thread(source.read, READ_BYTES):
                    yield chunk  # whole: what is left, then the end
                return

    def taken(self, user_id: str, file_id: str) -> bool:
        return any(self.of(user_id).glob(f"{file_id}.*"))

    async def own_copy(self, audio: StoredAudio, user_id: str, file_id: str | None) -> Path:
        """`audio` under the user's folder: named `file_id`, or a new id (AudioGone when it
        was evicted since it was found)."""
        return await asyncio.to_thread(_link, audio, self.of(user_id), file_id)


def inode_of(stat: os.stat_result) -> str:
    """Which audio a file is, the same for all its names (hard links): its inode number,
    with its last change so that a number the file system reuses for new audio is another.
    Not the device: replicas on several machines may see one shared volume as different
    devices."""
    return f"{stat.st_ino}-{stat.st_mtime_ns}"


def is_stale(part: os.stat_result, idle_s: float) -> bool:
    """A part not written for longer than `idle_s`: its writer is gone (a live one writes
    at least that often, or gives up: the engine's read timeout)."""
    return time.time() - part.st_mtime > idle_s


def _part_state(part: Path, final: Path, idle_s: float) -> str:
    try:
        return "stale" if is_stale(part.stat(), idle_s) else "growing"
    except FileNotFoundError:
        return "whole" if final.exists() else "failed"


def audio_url(user_id: str, path: Path) -> str:
    return f"/mnt/user_assets/{user_id}/audio/{path.name}"


def new_file_id() -> str:
    return secrets.token_urlsafe(16)


def _finish(writer: AudioWriter, raw_rate: int) -> StoredAudio:
    if writer.media_type == "wav":
        fix_streamed_wav(writer.temp)
    writer.temp.replace(writer.final)  # atomic: a reader sees the whole file or none
    final = writer.final
    return StoredAudio(
        final,
        writer.media_type,
        duration_s(final, writer.media_type, raw_rate),
        final.stat().st_size,
    )


def remove(path: Path) -> None:
    """Removes an audio file, then its folder and its user's if that left them empty."""
    path.unlink(missing_ok=True)
    for folder in (path.parent, path.parent.parent):
        try:
            folder.rmdir()
        except OSError:  # not empty (other files, one just written), gone already: left
            return


def _in_folder(make: Callable[[], T], target: Path) -> T:
    """`make()` of `target`, with its folder made first, and again when it went before
    `make` wrote there (another request's eviction removed it, empty: `remove`)."""
    for _ in range(FOLDER_TRIES - 1):
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            return make()
        except FileNotFoundError:
            if target.parent.is_dir():
                raise  # not the folder: what `make` reads is gone
    target.parent.mkdir(parents=True, exist_ok=True)
    return make()


def _link(audio: StoredAudio, folder: Path, file_id: str | None) -> Path:
    """A new name for the audio; a `file_id` the caller chose must be new too. AudioGone when
    the audio is no longer there (evicted since it was found): nothing is made then."""
    target = folder / f"{file_id or new_file_id()}.{audio.media_type}"
    if target == audio.path:
        return target
    try:
        _in_folder(lambda: _new_name(audio.path, target), target)
    except FileExistsError as exc:
        raise FileIdTaken(file_id or target.stem) from exc
    except FileNotFoundError as exc:
        raise AudioGone(audio.path) from exc
    return target


def _new_name(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError as exc:  # another file system, or too many names: a copy serves as well
        if exc.errno not in (errno.EXDEV, errno.EMLINK):
            raise
        _copy(source, target)


def _copy(source: Path, target: Path) -> None:
    """`source` as the new file `target`: whole, or not there at all (an empty or partial
    file would be served, as immutable, under a URL that is never reused)."""
    with source.open("rb") as audio:  # gone: raises before the target exists
        out = target.open("xb")
        try:
            with out:
                shutil.copyfileobj(audio, out)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
