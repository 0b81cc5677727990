"""The keys auth signs access tokens with: a configured JWK Set, else (outside production) one
made at start-up, which dies with the process: tokens then end with a restart."""

import logging
from pathlib import Path

from joserfc.jwk import KeySet

from avatar_auth.settings import AuthSettings
from avatar_shared.tokens import SigningKeys, generate_key, read_key_set

logger = logging.getLogger("avatar.auth")


class MissingSigningKeys(RuntimeError):
    pass


def signing_keys(settings: AuthSettings) -> SigningKeys:
    return SigningKeys(
        _key_set(settings),
        settings.token_issuer,
        settings.token_audience,
        settings.token_lifetime_s,
    )


def _key_set(settings: AuthSettings) -> KeySet:
    if settings.signing_keys_file:
        return read_key_set(Path(settings.signing_keys_file))
    if settings.env == "production":
        raise MissingSigningKeys("ENV=production needs SIGNING_KEYS_FILE (a private JWK Set)")
    logger.warning("SIGNING_KEYS_FILE is empty: signing with a key made for this process only")
    return KeySet([generate_key()])
