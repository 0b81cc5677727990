"""How the tts service tells whether GPT-SoVITS is up (for /upstreamz)."""

import httpx

from avatar_shared.health import Status, UpstreamCheck, probe_url
from avatar_tts.settings import TtsSettings


def gpt_sovits_check(settings: TtsSettings) -> UpstreamCheck:
    # api_v2 has no health endpoint: any answer from /tts (400 for a bare GET) means it is up.
    async def check(client: httpx.AsyncClient) -> Status:
        return await probe_url(client, f"{settings.tts_base_url}{settings.tts_api_path}")

    return check
