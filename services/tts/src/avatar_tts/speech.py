"""Synthesis with a cache: the same text in the same voice with the same settings is made
once, across replicas, and then served from disk.

Redis keys:
- `tts:cache:{key}`: hash of the canonical file (path, format, duration, size) for a cache
  key (a hash of every parameter that changes the sound).
- `tts:lock:{key}`: held while one replica synthesizes; others wait for its result.
- `tts:user:{user_id}:{key}`: the file id that user already has for that key.
Files: `{ASSETS_DIR}/{user_id}/audio/{file_id}.{ext}`, written atomically. A second user
gets the same content under their own path (a hard link), so no URL reveals another user.
"""

import asyncio
import hashlib
import json
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from avatar_shared.timestamps import utc_now
from avatar_tts.audio import duration_s, fix_streamed_wav
from avatar_tts.engines import SpeechEngine, Synthesis
from avatar_tts.errors import TtsTimeout
from avatar_tts.retention import Retention
from avatar_tts.schemas import SpeechFile

LOCK_MS = 120_000  # longer than any synthesis; a crashed holder's lock expires
WAIT_POLL_S = 0.05


def cache_key(parameters: dict[str, Any]) -> str:
    normalised = {**parameters, "text": " ".join(str(parameters.get("text", "")).split())}
    return hashlib.sha256(json.dumps(normalised, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class StoredAudio:
    path: Path
    media_type: str
    duration: float
    size: int


class SpeechService:
    def __init__(
        self,
        redis: Redis,
        engines: Mapping[str, SpeechEngine],
        default_engine: str,
        assets_dir: Path,
        wait_s: float,
        retention: Retention,
    ) -> None:
        self.retention = retention
        self.redis = redis
        self.engines = engines
        self.default_engine = default_engine
        self.assets_dir = assets_dir
        self.wait_s = wait_s

    async def speak(self, user_id: str, job: Synthesis, file_id: str | None = None) -> SpeechFile:
        engine = self.engines[job.voice.engine or self.default_engine]
        key = cache_key(engine.sound_parameters(job))
        audio = await self._cached(key)
        made_here = False
        if audio is None:
            audio, made_here = await self._synthesize_once(key, user_id, job, engine)
        return await self._file_for(user_id, key, audio, job.voice.id, not made_here, file_id)

    async def _cached(self, key: str) -> StoredAudio | None:
        entry = await self.redis.hgetall(f"tts:cache:{key}")
        if not entry or not await asyncio.to_thread(Path(entry["path"]).exists):
            return None  # evicted from disk: make it again
        return StoredAudio(
            Path(entry["path"]), entry["format"], float(entry["duration"]), int(entry["size"])
        )

    async def speak_streaming(self, user_id: str, job: Synthesis) -> AsyncIterator[bytes] | None:
        """The audio as the engine produces it, stored and cached on the way, when this call
        is the one to make it; None when it is cached or being made (then use `speak`)."""
        engine = self.engines[job.voice.engine or self.default_engine]
        key = cache_key(engine.sound_parameters(job))
        if await self._cached(key) is not None or (token := await self._try_lock(key)) is None:
            return None

        async def stream() -> AsyncIterator[bytes]:
            result: list[StoredAudio] = []
            try:
                async for chunk in self._produce(key, user_id, job, engine, result):
                    yield chunk
                await self._file_for(user_id, key, result[0], job.voice.id, False, None)
            finally:
                await self._release(key, token)

        return stream()

    async def _synthesize_once(
        self, key: str, user_id: str, job: Synthesis, engine: SpeechEngine
    ) -> tuple[StoredAudio, bool]:
        """Single flight across replicas: one holder synthesizes, the others wait for it.
        Also says whether this call made the audio (else it came from the cache)."""
        deadline = asyncio.get_running_loop().time() + self.wait_s
        while (token := await self._try_lock(key)) is None:
            await asyncio.sleep(WAIT_POLL_S)
            if (cached := await self._cached(key)) is not None:
                return cached, False
            if asyncio.get_running_loop().time() > deadline:
                raise TtsTimeout("Another request is still making this speech; try again.")
        try:
            if (cached := await self._cached(key)) is not None:
                return cached, False  # the previous holder finished just before our turn
            result: list[StoredAudio] = []
            async for _ in self._produce(key, user_id, job, engine, result):
                pass
            return result[0], True
        finally:
            await self._release(key, token)

    async def _try_lock(self, key: str) -> str | None:
        token = secrets.token_hex(8)
        return (
            token if await self.redis.set(f"tts:lock:{key}", token, nx=True, px=LOCK_MS) else None
        )

    async def _release(self, key: str, token: str) -> None:
        if await self.redis.get(f"tts:lock:{key}") == token:
            await self.redis.delete(f"tts:lock:{key}")

    async def _produce(
        self,
        key: str,
        user_id: str,
        job: Synthesis,
        engine: SpeechEngine,
        result: list[StoredAudio],
    ) -> AsyncIterator[bytes]:
        """Synthesize into a new file and cache it, passing each chunk on as it arrives;
        the stored audio ends up in `result`. The caller holds the lock."""
        folder = self.user_folder(user_id)
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        final = folder / f"{new_file_id()}.{job.media_type}"
        descriptor, temp_name = tempfile.mkstemp(dir=folder, suffix=".part")
        temp = Path(temp_name)
        try:
            with os.fdopen(descriptor, "wb") as out:
                async for chunk in engine.speak(job):
                    out.write(chunk)
                    yield chunk
            stored = await asyncio.to_thread(_finish, temp, final, job.media_type)
        except BaseException:
            await asyncio.to_thread(temp.unlink, missing_ok=True)
            raise
        await self.redis.hset(
            f"tts:cache:{key}",
            mapping={
                "path": str(stored.path),
                "format": stored.media_type,
                "duration": stored.duration,
                "size": stored.size,
            },
        )
        await self.retention.kept(stored.path, stored.size)
        result.append(stored)

    async def _file_for(
        self,
        user_id: str,
        key: str,
        audio: StoredAudio,
        voice_id: str,
        cached: bool,
        file_id: str | None,
    ) -> SpeechFile:
        """The caller's own file for this audio: under the id asked for, else the one the
        caller already has, else a new link to the cache's file."""
        mapping = f"tts:user:{user_id}:{key}"
        own = audio.path if audio.path.parent == self.user_folder(user_id) else None
        if file_id is not None:
            own = await asyncio.to_thread(_link, audio, self.user_folder(user_id), file_id)
        elif own is None:
            known = await self.redis.get(mapping)
            folder = self.user_folder(user_id)
            candidate = folder / f"{known}.{audio.media_type}" if known else None
            if candidate and await asyncio.to_thread(candidate.exists):
                own = candidate
            else:
                own = await asyncio.to_thread(_link, audio, folder)
        await self.redis.set(mapping, own.stem)
        await self.retention.kept(own, audio.size)
        return SpeechFile(
            audio_url=f"/mnt/user_assets/{user_id}/audio/{own.name}",
            file_id=own.stem,
            duration=audio.duration,
            file_size=audio.size,
            format=audio.media_type,
            voice_id=voice_id,
            created_at=utc_now(),
            cached=cached,
        )

    def user_folder(self, user_id: str) -> Path:
        return self.assets_dir / user_id / "audio"


def new_file_id() -> str:
    return secrets.token_urlsafe(16)


def _finish(temp: Path, final: Path, media_type: str) -> StoredAudio:
    if media_type == "wav":
        fix_streamed_wav(temp)
    temp.replace(final)  # atomic: a reader sees the whole file or none
    return StoredAudio(final, media_type, duration_s(final, media_type), final.stat().st_size)


def _link(audio: StoredAudio, folder: Path, file_id: str | None = None) -> Path:
    """The same content under another user's folder, with its own file id."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{file_id or new_file_id()}.{audio.media_type}"
    if target == audio.path or target.exists():
        return target
    try:
        os.link(audio.path, target)
    except OSError:  # another file system: a copy serves as well
        target.write_bytes(audio.path.read_bytes())
    return target
