"""User personas ("who am I"): who the caller plays in a role-play, by name and description,
one of them optionally the default. Kept by the characters service, owner only, under quotas
like characters' (see store.py); chat reads one with the caller's credentials."""
