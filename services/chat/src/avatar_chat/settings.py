from typing import Literal

from pydantic import Field, model_validator

from avatar_shared.settings import ServiceSettings


class ChatSettings(ServiceSettings):
    llm_service: Literal["ollama", "vllm"] = "ollama"
    """Which LLM server to speak to: ollama or vllm (OpenAI-compatible)."""
    ollama_base_url: str = "http://localhost:11434"
    """Ollama server."""
    vllm_base_url: str = "http://localhost:8002"
    """OpenAI-compatible server; may carry a path prefix such as /vllm."""
    vllm_api_key: str = ""
    """Bearer token for the OpenAI-compatible server."""
    default_model: str = "gemma-3-27b-it"
    """Model used when a request names none."""
    offered_models: str = ""
    """Comma-separated models clients may choose besides the default (empty: every model the
    LLM server has). Others answer 404 model_not_found, so no client can make the server load
    a model of its choosing."""
    llm_connect_timeout_s: float = Field(3.0, gt=0)
    """Connect timeout to the LLM."""
    llm_read_timeout_s: float = Field(60.0, gt=0)
    """Longest wait for the next bytes from the LLM."""
    llm_total_timeout_s: float = Field(180.0, gt=0)
    """Longest a whole LLM call (or stream) may take."""
    llm_context_tokens: int = Field(8192, ge=256)
    """The model's context window in tokens, also sent to Ollama as num_ctx; a smaller trained
    length reported by the server wins."""
    summary_trigger_ratio: float = Field(0.8, gt=0.1, le=1)
    """Older turns are summarized when a prompt plus max_tokens would reach this share of the
    context window."""
    summary_ahead_ratio: float = Field(0.6, ge=0, lt=1)
    """After a reply, a conversation past this share of the context window has its older
    turns summarized in the background, so no turn waits for its summary (0: off, a turn
    summarizes when it reaches SUMMARY_TRIGGER_RATIO). Below SUMMARY_TRIGGER_RATIO."""
    keep_recent_turns: int = Field(16, ge=2)
    """Most recent messages kept verbatim when older ones are summarized."""
    summary_max_tokens: int = Field(512, ge=32)
    """Length budget of the summary of older turns, in tokens."""
    summary_timeout_s: float = Field(60.0, gt=0)
    """Longest a request spends summarizing before it drops the oldest turns."""
    llm_keep_alive: str = "5m"
    """How long Ollama keeps the model loaded."""
    max_messages: int = Field(200, gt=0)
    """Most messages one chat request may carry."""
    max_message_chars: int = Field(8000, gt=0)
    """Longest message a user writes, in characters (a new one, an edit, one in a client's
    history or an import); the character's replies are bounded by the conversation's caps."""
    max_total_chars: int = Field(100_000, gt=0)
    """Longest conversation one request may carry, in characters."""
    session_ttl_s: int = Field(7 * 24 * 3600, gt=0)
    """A chat session idle this long is forgotten (a signed-in user's conversations kept on the
    server stay until deleted)."""
    max_stored_messages: int = Field(1000, ge=2)
    """Most messages a session keeps as its history; older ones are dropped (the client
    sends the conversation itself, so replies do not depend on them)."""
    max_stored_bytes: int = Field(1024 * 1024, ge=64 * 1024)
    """Most bytes of messages a signed-in user's session keeps as its history; the oldest
    go first (the latest turn is always kept)."""
    anon_max_stored_bytes: int = Field(256 * 1024, ge=64 * 1024)
    """The same for an anonymous caller's session."""
    max_stored_sessions_per_user: int = Field(200, gt=0)
    """Most stored chat sessions (conversations kept for SESSION_TTL_S) one signed-in user
    keeps; their next new one deletes their least recently used one."""
    max_stored_sessions_per_address: int = Field(20, gt=0)
    """The same for all anonymous callers of one client address together (ids are free: a
    cap per id would bound nothing); past it, the id holding the most there loses its least
    recently used first."""
    max_conversations_per_user: int = Field(1000, gt=0)
    """Most conversations kept on the server (POST /api/chat/sessions, branches, imports) one
    signed-in user keeps; they stay until deleted, and one more answers 409 quota_exceeded.
    (An anonymous caller's expire after SESSION_TTL_S and count in
    MAX_STORED_SESSIONS_PER_ADDRESS.)"""
    max_conversation_bytes_per_user: int = Field(32 * 1024 * 1024, ge=1024 * 1024)
    """Most bytes of messages those conversations of one signed-in user hold together."""
    max_swipes: int = Field(20, ge=2, le=1000)
    """Most alternates a reply keeps (regenerate adds one); past it, the oldest goes."""
    tts_timeout_s: float = Field(60.0, gt=0)
    """Longest wait for the tts service to speak a reply."""
    llm_max_in_flight: int = Field(8, gt=0)
    """LLM calls one chat replica runs at once; more wait in line, each caller's in turn."""
    llm_queue_wait_s: float = Field(10.0, gt=0)
    """Longest a call waits in line before 503 llm_busy."""
    llm_calls_per_user: int = Field(2, gt=0)
    """Chat requests one user (or anonymous id) may have answered at once, across every
    replica; more get 429 rate_limited."""
    llm_calls_per_address: int = Field(3, gt=0)
    """The same for all anonymous callers of one client address together."""
    llm_max_line_bytes: int = Field(64 * 1024, ge=1024)
    """Longest line of a streamed answer the LLM server may send; a longer one ends the
    reply with 502 llm_error."""
    stream_write_timeout_s: float = Field(10.0, gt=0)
    """A streamed reply whose client has not taken its next event for this long (the send
    blocks: the client stopped reading) is ended, and its LLM slot given back."""
    chat_rate_per_min: int = Field(30, gt=0)
    """Chat requests one user (or anonymous id) may make a minute; a caller without an id is
    counted by client address."""
    max_concurrent_users: int = Field(20, gt=0)
    """Most chat sessions active at once, across every replica."""
    max_sessions_per_user: int = Field(3, gt=0)
    """Most of those one user (or anonymous id) holds; their next new session takes the
    place of their least recently used one."""
    max_sessions_per_address: int = Field(6, gt=0)
    """Most of those all anonymous callers of one client address hold together; a new
    session past it takes the place of the address's least recently used one."""
    active_session_idle_s: int = Field(300, gt=0)
    """A session idle this long no longer counts as active."""
    models_cache_s: float = Field(30.0, ge=0)
    """How long the model list is reused."""
    character_cache_s: float = Field(30.0, ge=0)
    """Longest a character fetched from the characters service is reused: one that changes is
    dropped at once when characters announces it (Redis channel `characters:changed`), so this
    bounds only what a replica out of touch with that channel may miss."""
    default_user_name: str = Field("User", min_length=1, max_length=100)
    """`{{user}}` in prompts when the user chose no persona of their own."""
    lore_scan_depth: int = Field(4, ge=0, le=100)
    """Recent messages (besides the new one) scanned for lorebook keys, unless the book says."""
    lore_budget_ratio: float = Field(0.25, gt=0, le=1)
    """Share of the context window lore may take, unless the book sets a token budget."""
    memory_learn_every: int = Field(8, ge=2, le=1000)
    """Long-term memory: a conversation's new messages are read for facts once this many
    have come since the last reading (or when it goes idle), in the background."""
    memory_idle_s: int = Field(300, ge=1)
    """A conversation with messages not yet read for facts, quiet this long, is read."""
    memory_learn_max_tokens: int = Field(512, ge=64)
    """Length budget of the model's answer when it lists the facts it learned."""
    memory_budget_ratio: float = Field(0.1, gt=0, le=0.5)
    """Share of the context window the memories in a prompt may take (pinned ones always go
    in)."""
    memory_query_messages: int = Field(6, ge=1, le=100)
    """The last messages memories are ranked against at each turn."""
    memory_max_chars: int = Field(500, ge=20, le=4000)
    """Longest memory, in characters."""
    max_memories_per_user: int = Field(2000, gt=0)
    """Most memories one signed-in user keeps, over all characters; past it a new one is 409
    quota_exceeded (a learned one is not stored)."""
    max_memory_bytes_per_user: int = Field(2 * 1024 * 1024, gt=0)
    """Most bytes one signed-in user's memories may take in Redis."""
    max_memories_per_anonymous_user: int = Field(200, gt=0)
    """Most memories one anonymous user keeps."""
    max_memory_bytes_per_anonymous_user: int = Field(200 * 1024, gt=0)
    """Most bytes one anonymous user's memories may take."""
    max_memories_per_address: int = Field(1000, gt=0)
    """Most memories every anonymous user of one client address keeps together."""
    max_memory_bytes_per_address: int = Field(1024 * 1024, gt=0)
    """Most bytes the memories of every anonymous user of one client address take together."""
    max_pinned_memories: int = Field(20, ge=0, le=200)
    """Most memories of one character a user may pin: pinned ones go into every prompt,
    whatever their length, so they must fit the window with everything else."""
    memory_writes_per_min: int = Field(60, gt=0)
    """Memory writes (POST, PATCH, DELETE /api/memories) one user may make a minute."""
    llm_alternate_roles: bool = False
    """Reshape prompts for chat templates that take one system message and then strictly
    alternating turns, the user's first (Gemma's on vLLM): later system messages become
    notes on user turns, a greeting first gets an opening user turn."""

    @model_validator(mode="after")
    def _ahead_before_the_trigger(self) -> "ChatSettings":
        # Ahead at or past the trigger would never run before a turn had to wait anyway.
        if self.summary_ahead_ratio >= self.summary_trigger_ratio:
            raise ValueError(
                f"SUMMARY_AHEAD_RATIO ({self.summary_ahead_ratio}) must be below "
                f"SUMMARY_TRIGGER_RATIO ({self.summary_trigger_ratio}), or 0 (off)"
            )
        return self
