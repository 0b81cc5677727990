import secrets


def new_message_id() -> str:
    """16 hex digits: 64 random bits, so ids never collide within a conversation."""
    return secrets.token_hex(8)
