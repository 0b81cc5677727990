"""The chat service's own Prometheus metrics, served at its `GET /metrics` with the shared ones
(requests, upstream latency: avatar_shared.metrics)."""

from prometheus_client import Counter, Gauge

LLM_TOKENS = Counter(
    "avatar_llm_tokens_total", "Tokens the LLM server reported, by kind.", ["model", "kind"]
)
# Brought up to date before each scrape (see app.py).
CHAT_ACTIVE_SESSIONS = Gauge(
    "avatar_chat_active_sessions",
    "Chat sessions counted by the concurrent-user limit.",
    multiprocess_mode="mostrecent",
)
