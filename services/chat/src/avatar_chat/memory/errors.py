"""The errors of long-term memories, each with the status and code of the envelope."""

from avatar_chat.errors import QuotaExceeded
from avatar_shared.errors import NamedNotFound


class MemoryNotFound(NamedNotFound):
    code, what, hint = "memory_not_found", "Memory", " among yours (see GET /api/memories)"


class MemoryQuotaExceeded(QuotaExceeded):
    message = "You keep as many memories (or bytes of them) as one user may; delete one first."
