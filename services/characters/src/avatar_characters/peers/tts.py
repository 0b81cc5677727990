"""The tts service, as the characters service needs it: which voice ids exist
(`GET /api/tts/voices`), cached briefly. While the tts service cannot say, any well-formed
slug is accepted, so a tts outage never blocks editing characters."""

import httpx

from avatar_characters.errors import UnknownVoice
from avatar_shared.peers import PeerClient, PeerError
from avatar_shared.ttl_cache import TtlCache

VOICES_TIMEOUT_S = 2.0


class VoiceDirectory:
    def __init__(self, http: httpx.AsyncClient, tts_url: str, ttl_s: float) -> None:
        self.tts = PeerClient(http, "tts", tts_url, timeout_s=VOICES_TIMEOUT_S)
        self.ttl_s = ttl_s
        self._voices = TtlCache(self._fetch)

    async def check(self, voice_id: str) -> None:
        known = await self._voices.get()
        if known is not None and voice_id not in known:
            raise UnknownVoice(voice_id)

    async def _fetch(self) -> tuple[set[str] | None, float]:
        try:
            voices = (await self.tts.get("/api/tts/voices"))["voices"]
            return {voice["id"] for voice in voices}, self.ttl_s
        except (PeerError, KeyError, TypeError):
            return None, self.ttl_s  # unknown: accept any slug until the next try
