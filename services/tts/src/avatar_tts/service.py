"""Speech with a cache: the same text in the same voice with the same settings is made once,
across replicas (`store`), written to disk (`files`), and then served from there; the folder
is kept within its limits by `retention`. Speech the engine streams can be answered as soon as
its stream has begun (`speak_early`): its file is then served as it grows."""

import asyncio
import logging
import math
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from pathlib import Path

import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError

from avatar_shared.budget import Budget
from avatar_shared.errors import StorageFull
from avatar_shared.gate import Gate
from avatar_shared.locks import LockTimeout
from avatar_shared.metrics import upstream_call
from avatar_shared.rate import Caller, CallerRate
from avatar_shared.reloading_file import ReloadingFile
from avatar_shared.streaming import primed
from avatar_shared.timestamps import utc_now
from avatar_tts.engines import SpeechEngine, Synthesis, make_engines
from avatar_tts.errors import AudioNotFound, FileIdTaken, TtsBusy, TtsTimeout, VoiceNotFound
from avatar_tts.files import AudioFolder, AudioGone, StoredAudio, audio_url, new_file_id
from avatar_tts.metrics import TTS_CACHE
from avatar_tts.retention import Retention, holder_of
from avatar_tts.schemas import SpeechFile, TtsRequest, VoiceList
from avatar_tts.settings import TtsSettings
from avatar_tts.store import SpeechStore, cache_key
from avatar_tts.voices import VoicesFile

log = logging.getLogger("avatar.tts")

WAIT_POLL_S = 0.05  # how often a request waiting for another's speech looks in the cache
STALE_MARGIN_S = 5.0  # a part's writer is gone past tts_timeout_s and this without a write


class SpeechService:
    def __init__(
        self,
        settings: TtsSettings,
        redis: Redis,
        engine_http: httpx.AsyncClient,
        voices: ReloadingFile[VoicesFile],
    ) -> None:
        """`engine_http` reaches GPT-SoVITS (with the engine's own timeouts)."""
        self.voices = voices
        self.engines = make_engines(settings, engine_http)
        self.default_engine = settings.tts_engine
        self.store = SpeechStore(redis, ttl_s=max(1, math.ceil(settings.assets_max_age_s)))
        # A live writer writes at least every tts_timeout_s (else the engine's read times
        # out and it gives up; its part is made just before the engine is asked, whose
        # connect may take STALE_MARGIN_S more): a part not written for longer is stale.
        idle_s = settings.tts_timeout_s + STALE_MARGIN_S
        self.raw_rate = settings.tts_sample_rate  # raw PCM's: it says it nowhere
        self.folder = AudioFolder(Path(settings.assets_dir), idle_s, self.raw_rate)
        self.retention = Retention(
            redis,
            Budget(redis, "audio", settings.redis_maxmemory_bytes),
            settings.assets_max_bytes,
            settings.assets_max_bytes_per_user,
            settings.assets_max_files_per_user,
            settings.assets_max_age_s,
        )
        limits = (settings.tts_rate_per_min, settings.tts_rate_per_min_per_address)
        self.rate = CallerRate(redis, "tts", limits, 60, "speech requests", "a minute")
        self.gate = Gate(settings.tts_max_in_flight, settings.tts_queue_wait_s, TtsBusy)
        self.wait_s = settings.tts_timeout_s  # longest wait for another request's same speech
        self._finishing: set[asyncio.Task[None]] = set()  # speech answered early, still made
        self.shutdown_wait_s = settings.tts_shutdown_wait_s
        # How often stale parts and old audio are swept: every idle limit, or the age limit
        # when it is shorter, so that audio does not outlive it by more than that.
        self.sweep_s = min(idle_s, settings.assets_max_age_s)
        self._sweeping: asyncio.Task[None] | None = None

    def voice_list(self) -> VoiceList:
        return self.voices.get().public()

    def synthesis(self, body: TtsRequest) -> Synthesis:
        voice = self.voices.get().find(body.voice_id)
        if voice is None:
            raise VoiceNotFound(body.voice_id)
        # A prompt_lang the request did not send is the voice's own (its reference clip's).
        prompt_lang = body.prompt_lang if "prompt_lang" in body.model_fields_set else None
        return Synthesis(
            body.text, voice, body.text_lang, prompt_lang, body.media_type, body.streaming_mode
        )

    async def speak(self, caller: Caller, job: Synthesis, file_id: str | None = None) -> SpeechFile:
        await self._refuse_taken(caller, file_id)
        engine, key = self._engine_and_key(job)
        evicted = False
        while True:
            audio, made_here = await self.store.cached(key), False
            if audio is None:
                audio, made_here = await self._synthesize_once(key, caller, job, engine)
            try:
                speech = await self._file_for(
                    caller, key, audio, job.voice.id, not made_here, file_id
                )
            except AudioGone as exc:  # evicted (another request's retention) since it was found
                if evicted:  # again, at once: the folder has no room to keep it
                    raise StorageFull("The audio folder is full; try again later.") from exc
                evicted = True
                continue  # a cache miss after all: made again
            TTS_CACHE.labels("made" if made_here else "hit").inc()
            return speech

    async def speak_streaming(
        self, caller: Caller, job: Synthesis, file_id: str | None = None
    ) -> AsyncGenerator[bytes, None] | None:
        """The audio as the engine produces it, stored (also under `file_id`, if given) and
        cached on the way, when this call is the one to make it; None when it is cached or
        being made (then use `speak`). It has started when it is returned, so a failure up
        front is an ordinary error response; a client that leaves ends the synthesis too."""
        await self._refuse_taken(caller, file_id)
        engine, key = self._engine_and_key(job)
        if await self.store.cached(key) is not None:
            return None
        try:
            made = self._stream_made_here(key, caller, job, engine, own_id=file_id)
            return await primed(made)
        except LockTimeout:  # another request is making it
            return None

    async def speak_early(self, caller: Caller, job: Synthesis) -> SpeechFile | None:
        """The answer as soon as the engine's stream has begun and its first piece is on
        disk (perhaps only a WAV's header), when this call is the one to make the speech: its
        audio_url then serves the audio as it is written (`being_made`), and the rest is made,
        stored and cached in the background. None when it is cached or being made (then use
        `speak`). A failure before the first audio is the call's own error; a later one
        leaves no file and no cache."""
        engine, key = self._engine_and_key(job)
        if await self.store.cached(key) is not None:
            return None
        file_id = new_file_id()
        try:
            audio = await primed(self._stream_made_here(key, caller, job, engine, file_id))
        except LockTimeout:  # another request is making it
            return None
        task = asyncio.create_task(self._finish_early(audio, file_id))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)
        TTS_CACHE.labels("made").inc()
        path = self.folder.of(caller.user_id) / f"{file_id}.{job.media_type}"
        return SpeechFile(
            audio_url=audio_url(caller.user_id, path),
            file_id=file_id,
            duration=0.0,
            file_size=0,
            format=job.media_type,
            voice_id=job.voice.id,
            created_at=utc_now(),
            cached=False,
            complete=False,
        )

    async def being_made(self, user_id: str, file_name: str) -> AsyncIterator[bytes] | None:
        """A file of the user's that is still being written, as it is written (see
        `files.follow`); None when there is none (then it is whole, or there is no such
        file)."""
        part = await asyncio.to_thread(self.folder.being_written, user_id, file_name)
        return None if part is None else await self.folder.follow(part)

    async def start(self) -> None:
        """At start: `recover`, then stale parts swept every idle limit (on every replica:
        the one whose writer died may never come back), and audio past ASSETS_MAX_AGE_S
        evicted (else only new audio would evict it)."""
        await self.recover()
        self._sweeping = asyncio.create_task(self._sweep())

    async def close(self) -> None:
        """At shutdown: speech answered early (its URL handed out) is given the time to be
        finished (`tts_shutdown_wait_s`); what is still being made then is given up (its part
        file removed)."""
        if self._finishing:
            await asyncio.wait(set(self._finishing), timeout=self.shutdown_wait_s)
        tasks = [*self._finishing, *([self._sweeping] if self._sweeping else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_s)
            try:
                if removed := await asyncio.to_thread(self.folder.remove_stale_parts):
                    log.info("%d stale partial files removed", removed)
            except OSError as exc:  # the volume, for a moment: the next sweep tries again
                log.warning("stale partial files not swept: %r", exc)
            try:
                await self.retention.expire()
            except (RedisError, OSError) as exc:  # likewise, or Redis
                log.warning("old audio not swept: %r", exc)

    async def _finish_early(self, audio: AsyncGenerator[bytes, None], file_id: str) -> None:
        try:
            async with aclosing(audio):
                async for _ in audio:
                    pass
        except Exception as exc:  # nobody waits for it: the log says why
            log.warning("speech %s answered early was not finished: %r", file_id, exc)

    async def _stream_made_here(
        self,
        key: str,
        caller: Caller,
        job: Synthesis,
        engine: SpeechEngine,
        file_id: str | None = None,
        own_id: str | None = None,
    ) -> AsyncGenerator[bytes, None]:
        """Made into a file named `file_id` (else a new id), then also given the caller's
        `own_id` if asked for (a link: exclusive, like `speak`'s)."""
        async with self.store.making(key, wait_s=0):  # held until the stream ends, however
            result: list[StoredAudio] = []
            made = self._produce(key, caller, job, engine, result, file_id)
            async with aclosing(made) as audio:
                async for chunk in audio:
                    yield chunk
            await self._file_for(caller, key, result[0], job.voice.id, False, own_id)

    async def user_file(self, user_id: str, file_name: str) -> Path:
        """A stored file, for download; counts as a use when Redis can take note (the file
        is served either way: it is on disk)."""
        path = await asyncio.to_thread(self.folder.existing, user_id, file_name)
        if path is None:
            raise AudioNotFound()
        try:
            await self.retention.used(path)
        except RedisError as exc:
            log.warning("use of %s not noted (Redis unavailable): %s", path.name, exc)
        return path

    async def recover(self) -> None:
        """At start: half-written files of a process that died (stale parts) are removed, and
        the retention index is rebuilt from the folder if Redis lost it. Best effort: a Redis
        that is down now does not stop the service from starting."""
        removed = await asyncio.to_thread(self.folder.remove_stale_parts)
        restored = 0
        try:
            if await self.retention.lost():
                files = await asyncio.to_thread(self.folder.audio_files)
                await self.retention.rebuild(files)
                restored = len(files)
        except RedisError as exc:
            log.warning("retention index not checked (Redis unavailable): %s", exc)
        if removed or restored:
            log.info(
                "recovered: %d stale partial files removed, %d files indexed", removed, restored
            )

    def path_of(self, user_id: str, speech: SpeechFile) -> Path:
        return self.folder.of(user_id) / f"{speech.file_id}.{speech.format}"

    async def _refuse_taken(self, caller: Caller, file_id: str | None) -> None:
        """A file_id the caller used before is refused before any synthesis: nothing to make."""
        if file_id is not None and await asyncio.to_thread(
            self.folder.taken, caller.user_id, file_id
        ):
            raise FileIdTaken(file_id)

    def _engine_and_key(self, job: Synthesis) -> tuple[SpeechEngine, str]:
        engine = self.engines[job.voice.engine or self.default_engine]
        return engine, cache_key(engine.sound_parameters(job))

    async def _synthesize_once(
        self, key: str, caller: Caller, job: Synthesis, engine: SpeechEngine
    ) -> tuple[StoredAudio, bool]:
        """Single flight across replicas: one holder synthesizes; the others watch the cache
        and take its result as soon as it lands there. Also says whether this call made the
        audio (else it came from the cache)."""
        deadline = asyncio.get_running_loop().time() + self.wait_s
        while True:
            try:
                async with self.store.making(key, wait_s=0):
                    return await self._make_unless_cached(key, caller, job, engine)
            except LockTimeout:
                pass  # another request is making it
            if (cached := await self.store.cached(key)) is not None:
                return cached, False
            if asyncio.get_running_loop().time() > deadline:
                raise TtsTimeout("Another request is still making this speech; try again.")
            await asyncio.sleep(WAIT_POLL_S)

    async def _make_unless_cached(
        self, key: str, caller: Caller, job: Synthesis, engine: SpeechEngine
    ) -> tuple[StoredAudio, bool]:
        if (cached := await self.store.cached(key)) is not None:
            return cached, False  # the previous holder finished just before our turn
        result: list[StoredAudio] = []
        async with aclosing(self._produce(key, caller, job, engine, result)) as audio:
            async for _ in audio:
                pass
        return result[0], True

    async def _produce(
        self,
        key: str,
        caller: Caller,
        job: Synthesis,
        engine: SpeechEngine,
        result: list[StoredAudio],
        file_id: str | None = None,
    ) -> AsyncGenerator[bytes, None]:
        """Synthesize into a new file (named `file_id`, else a new id) and cache it, passing
        each chunk on once it is on disk; the stored audio ends up in `result`. The caller
        holds the key's lock; the engine gets one of this replica's slots."""
        await self.retention.make_room()  # a full index refuses before the engine works
        new_file = self.folder.new_file(caller.user_id, job.media_type, file_id)
        async with self.gate.slot(caller.key), new_file as out:  # fair across callers
            with upstream_call("tts"):
                async for chunk in engine.speak(job):
                    if written := out.write(chunk):  # a WAV's header as its file has it
                        yield written
            if rest := out.end():
                yield rest
        assert out.stored is not None  # set when the block ends without an error
        try:
            await self.retention.kept(out.stored.path, holder_of(caller), key)
            await self.store.remember(key, out.stored)
        except BaseException:  # not indexed, so never evicted: it must not stay
            await asyncio.to_thread(out.stored.path.unlink, True)
            raise
        result.append(out.stored)

    async def _file_for(
        self,
        caller: Caller,
        key: str,
        audio: StoredAudio,
        voice_id: str,
        cached: bool,
        file_id: str | None,
    ) -> SpeechFile:
        own = await self._own_file(caller.user_id, key, audio, file_id)
        try:
            await self.retention.kept(own, holder_of(caller), key)
        except StorageFull:  # a new name the index has no room for: not indexed, not kept
            if own != audio.path:
                await asyncio.to_thread(own.unlink, True)
            raise
        await self.store.set_users_file(caller.user_id, key, own)
        return SpeechFile(
            audio_url=audio_url(caller.user_id, own),
            file_id=own.stem,
            duration=audio.duration,
            file_size=audio.size,
            format=audio.media_type,
            voice_id=voice_id,
            created_at=utc_now(),
            cached=cached,
        )

    async def _own_file(
        self, user_id: str, key: str, audio: StoredAudio, file_id: str | None
    ) -> Path:
        """The caller's own file for this audio: under the id asked for, else the one made
        for the caller or already given to them, else a new link to the cache's file."""
        if file_id is not None:
            return await self.folder.own_copy(audio, user_id, file_id)
        if audio.path.parent == self.folder.of(user_id):
            return audio.path
        if known := await self.store.users_file_id(user_id, key):
            name = f"{known}.{audio.media_type}"
            if existing := await asyncio.to_thread(self.folder.existing, user_id, name):
                return existing
        return await self.folder.own_copy(audio, user_id, None)
