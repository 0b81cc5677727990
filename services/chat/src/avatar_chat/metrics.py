"""The chat service's own Prometheus metrics, served at its `GET /metrics` with the shared ones
(requests, upstream latency: avatar_shared.metrics)."""

from prometheus_client import Counter, Gauge

LLM_TOKENS = Counter(
    "avatar_llm_tokens_total",
    "Tokens the LLM server reported, by kind (prompt and completion of replies; "
    "summary_prompt and summary_completion of summary calls).",
    ["model", "kind"],
)
# Brought up to date before each scrape (see app.py).
CHAT_ACTIVE_SESSIONS = Gauge(
    "avatar_chat_active_sessions",
    "Chat sessions counted by the concurrent-user limit.",
    multiprocess_mode="mostrecent",
)
# A summary made in the background after a reply ("ahead") or by a turn that could not do
# without it ("in_turn"); a failed one is retried after a later reply (or by a later turn);
# a skipped one (ahead) was in another request's or replica's hands, made meanwhile, or its
# session was deleted meanwhile.
SUMMARIES = Counter(
    "avatar_chat_summaries_total",
    "Summaries of older turns, by when they were made and outcome.",
    ["when", "outcome"],
)

MEMORY_LEARNING = Counter(
    "avatar_chat_memory_learning_total",
    "Readings of a conversation for long-term memories, by outcome (learned, nothing, "
    "malformed, failed, skipped, stale: the conversation changed meanwhile; with_summary: "
    "listed by a summary made ahead).",
    ["outcome"],
)
# The model's answer is held to a schema, but no schema says a text must show something: a
# blank one (or one with control characters) is dropped alone, the answer's other facts kept.
MEMORY_FACTS_DROPPED = Counter(
    "avatar_chat_memory_facts_dropped_total",
    "Facts a memory reading (or a summary made ahead) listed whose text cannot make a memory "
    "(nothing visible, control characters): dropped, the answer's other facts kept.",
)
