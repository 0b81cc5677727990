"""The tts service's own Prometheus metrics, served at its `GET /metrics` with the shared ones
(requests, upstream latency: avatar_shared.metrics)."""

from prometheus_client import Counter

TTS_CACHE = Counter(
    "avatar_tts_cache_total", "Speech requests by how they were served.", ["result"]
)
