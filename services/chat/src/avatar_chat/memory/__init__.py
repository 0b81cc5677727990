"""Long-term memories: what a character learned about its user, kept per (user, character)."""
