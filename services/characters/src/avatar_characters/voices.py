"""Which voice ids exist, asked of the TTS service (`GET /api/tts/voices`), cached briefly.
While that endpoint is not available, any well-formed slug is accepted."""

import time

import httpx

from avatar_shared.errors import ValidationFailed


class VoiceDirectory:
    def __init__(self, http: httpx.AsyncClient, tts_url: str, ttl_s: float) -> None:
        self.http = http
        self.url = f"{tts_url.rstrip('/')}/api/tts/voices"
        self.ttl_s = ttl_s
        self._expires = 0.0
        self._known: set[str] | None = None

    async def check(self, voice_id: str) -> None:
        known = await self._voices()
        if known is not None and voice_id not in known:
            raise ValidationFailed(f"voice_id: unknown voice '{voice_id}'")

    async def _voices(self) -> set[str] | None:
        if time.monotonic() < self._expires:
            return self._known
        try:
            response = await self.http.get(self.url, timeout=2.0)
            voices = response.json()["data"]["voices"] if response.status_code == 200 else None
            self._known = {v["id"] for v in voices} if voices is not None else None
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            self._known = None
        self._expires = time.monotonic() + self.ttl_s
        return self._known
