"""How the chat service tells whether its LLM server is up (for /upstreamz)."""

import httpx

from avatar_chat.settings import ChatSettings
from avatar_shared.health import HEALTHY, Status, UpstreamCheck, probe_url


def _is_ok(response: httpx.Response) -> bool:
    return response.status_code == 200


def llm_check(settings: ChatSettings) -> UpstreamCheck:
    async def check(client: httpx.AsyncClient) -> Status:
        if settings.llm_service == "ollama":
            return await probe_url(client, f"{settings.ollama_base_url}/api/version", _is_ok)
        base = settings.vllm_base_url.rstrip("/")
        # vLLM's /health can answer 502 behind some proxies; /v1/models is the fallback.
        if await probe_url(client, f"{base}/health", _is_ok) == HEALTHY:
            return HEALTHY
        return await probe_url(client, f"{base}/v1/models", _is_ok)

    return check
