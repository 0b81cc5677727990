from datetime import UTC, datetime


def utc_now() -> str:
    """The current time as API.md writes it: ISO 8601 in UTC with a `Z`, to milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
