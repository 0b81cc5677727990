"""Access tokens: RS256 JWTs that only the auth service signs and every service verifies.

Auth holds the private keys (a JWK Set file: the first key signs, the others are earlier keys
that still verify until the tokens they signed expire). Every other service verifies with the
public keys auth serves at `/api/auth/.well-known/jwks.json`, fetched once and fetched again
when a token names a `kid` not seen yet (a rotation), at most once per `refresh_floor_s`.

RS256 rather than EdDSA: every JOSE library verifies it (joserfc already marks "EdDSA" as not
recommended in favour of the newer "Ed25519" name, which older verifiers do not know), and an
RSA verification costs about 30 µs here, signing only happens at sign-in.
"""

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey

logger = logging.getLogger("avatar.tokens")

ALGORITHM = "RS256"
JWKS_PATH = "/api/auth/.well-known/jwks.json"
LEEWAY_S = 30  # clock skew allowed on exp; a revocation outlives exp by as much
JWKS_MAX_AGE_S = 300.0  # fetched keys are fetched again after this (the setting's default)


def revoked_key(jti: str) -> str:
    """The Redis key that marks a token revoked (set by auth at logout, until the token's
    expiry; read by every service)."""
    return f"auth:revoked:{jti}"


class TokenInvalid(Exception):
    """Why a token is refused, for the log; the client only learns that it was."""


class KeysUnavailable(Exception):
    """The public keys could not be fetched (auth unreachable)."""


def generate_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"use": "sig", "alg": ALGORITHM}, auto_kid=True)


def write_key_set(path: Path, keys: list[RSAKey]) -> None:
    """A private JWK Set file, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps(KeySet([*keys]).as_dict(private=True)))


def read_key_set(path: Path) -> KeySet:
    keys = KeySet.import_key_set(json.loads(path.read_text()))
    if not keys.keys or any(not key.is_private or not key.kid for key in keys.keys):
        raise ValueError(f"{path}: every key needs a private part and a kid")
    return keys


@dataclass(frozen=True)
class Claims:
    sub: str
    jti: str
    exp: int


class SigningKeys:
    """Auth's side: signs with the first key of the set, publishes all of them."""

    def __init__(self, keys: KeySet, issuer: str, audience: str, lifetime_s: int) -> None:
        self.keys = keys
        self.issuer, self.audience, self.lifetime_s = issuer, audience, lifetime_s

    def issue(self, user_id: str) -> str:
        now = int(time.time())
        payload = {
            "iss": self.issuer, "aud": self.audience, "sub": user_id,
            "iat": now, "exp": now + self.lifetime_s, "jti": uuid.uuid4().hex,
        }  # fmt: skip
        key = self.keys.keys[0]
        return jwt.encode({"alg": ALGORITHM, "kid": key.kid}, payload, key, [ALGORITHM])

    def public_jwks(self) -> dict[str, Any]:
        return dict(self.keys.as_dict(private=False))  # joserfc's TypedDict, as a plain dict


class PublicKeys(Protocol):
    async def key_set(self, kid: str) -> KeySet:
        """A key set holding `kid` if any known key has it."""
        ...


class LocalKeys:
    """The auth service verifies with the keys it holds."""

    def __init__(self, keys: KeySet) -> None:
        self.keys = keys

    async def key_set(self, kid: str) -> KeySet:
        return self.keys


class RemoteJwks:
    """Every other service: auth's JWKS, cached for `max_age_s` (JWKS_MAX_AGE_S); fetched
    again at once for an unknown `kid`, but at most once per `refresh_floor_s`, so tokens
    with made-up kids cannot hammer auth. One fetch at a time: concurrent requests wait for
    it rather than judge a new key by the old set. Auth unreachable when the cache is due:
    the cached keys go on verifying the kids they hold.

    Rotation: publish the new key second in auth's set, wait JWKS_MAX_AGE_S (every service
    has it then), then move it first so it signs; drop the old key a token lifetime later."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        auth_url: str,
        refresh_floor_s: float,
        max_age_s: float = JWKS_MAX_AGE_S,
    ) -> None:
        self.http, self.url, self.refresh_floor_s = http, auth_url + JWKS_PATH, refresh_floor_s
        self.max_age_s = max_age_s
        self.keys: KeySet | None = None
        self.fetched_at = float("-inf")
        self.fetching = asyncio.Lock()
        self.stale = False  # the last fetch failed and the cached keys were kept

    async def key_set(self, kid: str) -> KeySet:
        if not self._fresh_with(kid):
            async with self.fetching:
                since = time.monotonic() - self.fetched_at
                if not self._fresh_with(kid) and since >= self.refresh_floor_s:
                    await self._refresh(kid)
        if self.keys is None:
            raise KeysUnavailable("no signing keys fetched yet")
        return self.keys

    def _fresh_with(self, kid: str) -> bool:
        if time.monotonic() - self.fetched_at > self.max_age_s:
            return False
        return self._knows(kid)

    def _knows(self, kid: str) -> bool:
        return self.keys is not None and any(key.kid == kid for key in self.keys.keys)

    async def _refresh(self, kid: str) -> None:
        """A fetch that fails leaves a known kid verifiable with the cached keys: an auth
        outage must not answer a signed-in request 503 each time the cache is due (the cached
        set is the last one auth published; a key withdrawn since could not be learned of
        while auth is down anyway). An unknown kid cannot be judged then (KeysUnavailable).
        Logged once per outage, not per request."""
        try:
            await self._fetch()
        except KeysUnavailable as exc:
            if not self._knows(kid):
                raise
            if not self.stale:
                logger.warning("auth's public keys not fetched, the cached ones kept: %s", exc)
            self.stale = True
        else:
            self.stale = False

    async def _fetch(self) -> None:
        self.fetched_at = time.monotonic()
        try:
            response = await self.http.get(self.url)
            response.raise_for_status()
            self.keys = KeySet.import_key_set(response.json())
        except (httpx.HTTPError, ValueError, JoseError) as exc:
            raise KeysUnavailable(f"{self.url}: {exc}") from exc


class TokenVerifier:
    def __init__(self, keys: PublicKeys, issuer: str, audience: str) -> None:
        self.keys = keys
        self.claims = jwt.JWTClaimsRegistry(
            leeway=LEEWAY_S,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            sub={"essential": True},
            exp={"essential": True},
            jti={"essential": True},
        )

    async def verify(self, token: str) -> Claims:
        """The token's claims; `TokenInvalid` for a bad signature, key, algorithm (`none`
        included), issuer, audience or expiry; `KeysUnavailable` when keys cannot be had."""
        try:
            header = jws.extract_compact(token.encode()).protected
            kid = header.get("kid")
            if not isinstance(kid, str):
                raise TokenInvalid("no kid in the header")
            decoded = jwt.decode(token, await self.keys.key_set(kid), [ALGORITHM])
            self.claims.validate(decoded.claims)
            claims = decoded.claims
            return Claims(sub=str(claims["sub"]), jti=str(claims["jti"]), exp=int(claims["exp"]))
        except (JoseError, ValueError, TypeError) as exc:
            raise TokenInvalid(str(exc)) from exc
