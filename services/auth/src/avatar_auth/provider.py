"""The OpenID provider (Google, or the demo provider), spoken to with authlib's Starlette client.

Authorization code flow with PKCE (S256), `state` and `nonce`. What a started sign-in must
remember (state, nonce, PKCE verifier, `next`) lives in Redis, so any auth replica can finish
a sign-in another started. The browser that started it is bound to it by an HttpOnly cookie
holding its `state` (one per pending sign-in, so several tabs may sign in at once): authlib
accepts a callback only when the browser's own session marks that state (RFC 6749 §10.12,
login CSRF), and that session is rebuilt from the callback's own cookie alone.

authlib speaks HTTP through httpx2 (its maintained successor of httpx; with plain httpx it
warns that support is going), so provider failures arrive as httpx2 errors. authlib makes an
HTTP client for every call (every sign-in start) and closes it after; each would load the
system's CA certificates anew (about 25 ms of CPU: a burst of sign-in starts held auth's one
event loop long enough to fail its health checks). So every one of them is given the same
transport (`SharedTransport`: one connection pool, one TLS context), made once.
"""

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx2
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.base_client import OAuthError
from authlib.integrations.starlette_client import OAuth
from joserfc.errors import JoseError
from redis.asyncio import Redis
from starlette.requests import Request

from avatar_auth.errors import ProviderUnavailable
from avatar_auth.settings import AuthSettings

logger = logging.getLogger("avatar.auth")

CLIENT_NAME = "google"
# One cookie per pending sign-in, `auth_login_state_<8 hex of its state>`: a browser may have
# started sign-ins in several tabs, and each must finish. At most PENDING_SIGN_INS of them
# (a site's cookies are few): a further start drops the oldest. Value: `<n>.<state>`, n
# counting this browser's starts, so the oldest is known without trusting clocks.
STATE_COOKIE = "auth_login_state"
PENDING_SIGN_INS = 4
# The provider's own error codes (RFC 6749 §4.1.2.1, OpenID Connect Core §3.1.2.6) that are
# passed on to the frontend as they are; any other becomes `provider_error`.
PROVIDER_ERRORS = frozenset(
    {
        "access_denied", "invalid_request", "unauthorized_client", "unsupported_response_type",
        "invalid_scope", "server_error", "temporarily_unavailable", "interaction_required",
        "login_required", "account_selection_required", "consent_required",
    }
)  # fmt: skip


class SignInFailed(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code


@dataclass(frozen=True)
class Account:
    """A provider account whose sign-in just completed."""

    sub: str
    profile: dict[str, Any]  # email, email_verified, username, picture
    next_path: str | None


class RedisStateCache:
    """The cache interface authlib's Starlette integration uses for sign-in state."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def get(self, key: str) -> str | None:
        value: str | None = await self.redis.get(f"auth:login:{key}")
        return value

    async def set(self, key: str, value: str, expires: int) -> None:
        await self.redis.set(f"auth:login:{key}", value, ex=expires)

    async def delete(self, key: str) -> None:
        await self.redis.delete(f"auth:login:{key}")


class SharedTransport(httpx2.AsyncBaseTransport):
    """The provider's one transport, lent to each client authlib makes: their closing (at the
    end of every call) leaves it open; `close` closes it, at shutdown."""

    def __init__(self) -> None:
        self._transport = httpx2.AsyncHTTPTransport(trust_env=False)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        return await self._transport.handle_async_request(request)

    async def aclose(self) -> None:
        pass  # a client authlib made is done with it; the transport goes on

    async def close(self) -> None:
        await self._transport.aclose()


class OpenIdProvider:
    def __init__(self, settings: AuthSettings, redis: Redis) -> None:
        self.redirect_uri = settings.redirect_uri
        self.transport = SharedTransport()
        oauth = OAuth(cache=RedisStateCache(redis))
        self.client = oauth.register(
            CLIENT_NAME,
            client_id=settings.google_client_id,
            client_secret=settings.google_client_secret.get_secret_value(),
            server_metadata_url=settings.oidc_discovery_url,
            client_kwargs={
                "scope": "openid email profile",
                "code_challenge_method": "S256",
                "timeout": settings.oidc_timeout_s,
                "trust_env": False,
                "transport": self.transport,
            },
        )
        self.client.framework.expires_in = settings.login_timeout_s

    async def close(self) -> None:
        await self.transport.close()

    async def start(self, next_path: str | None) -> tuple[str, str]:
        """The provider URL to send the browser to, and the state to bind it with."""
        try:
            started = await self.client.create_authorization_url(self.redirect_uri)
        except (httpx2.HTTPError, ValueError, KeyError, RuntimeError) as exc:
            # RuntimeError: authlib's word for a discovery document it cannot use.
            logger.warning("sign-in not started: provider unavailable: %s", exc)
            raise ProviderUnavailable() from exc
        url, state = started.pop("url"), started["state"]
        data = {**started, "redirect_uri": self.redirect_uri, "next": next_path}
        data.pop("state")
        await self.client.framework.set_state_data(None, state, data)
        return url, state

    async def finish(self, request: Request) -> Account:
        """The account of a callback, or `SignInFailed` with the code the frontend gets."""
        state = request.query_params.get("state", "")
        session = _browser_session(bound_state(request.cookies, state))
        data = await self.client.framework.get_state_data(session, state)
        if not data:
            raise SignInFailed("state_mismatch", "state not started by this browser, or expired")
        if error := request.query_params.get("error"):
            await self.client.framework.clear_state_data(session, state)
            code = error if error in PROVIDER_ERRORS else "provider_error"
            raise SignInFailed(code, request.query_params.get("error_description", ""))
        request.scope["session"] = session
        userinfo = await self._exchange(request)
        if userinfo.get("email_verified") is not True:
            raise SignInFailed("email_not_verified", f"sub {userinfo.get('sub')}")
        return Account(str(userinfo["sub"]), _profile(userinfo), data.get("next"))

    async def _exchange(self, request: Request) -> dict[str, Any]:
        """Code for tokens (authlib clears the state: a callback works once), then the ID
        token checked: signature by the provider's keys, issuer, audience, expiry, nonce."""
        try:
            token = await self.client.authorize_access_token(
                request, claims_options=await self._id_token_rules()
            )
        except httpx2.HTTPError as exc:
            raise SignInFailed("provider_unavailable", str(exc)) from exc
        except OAuthError as exc:
            raise SignInFailed("token_exchange_failed", str(exc)) from exc
        except RuntimeError as exc:  # e.g. discovery without jwks_uri
            raise SignInFailed("provider_unavailable", str(exc)) from exc
        except (AuthlibBaseError, JoseError, ValueError, KeyError) as exc:
            raise SignInFailed("invalid_id_token", repr(exc)) from exc
        userinfo = token.get("userinfo")
        if not userinfo or not userinfo.get("sub"):
            raise SignInFailed("invalid_id_token", "no ID token in the token response")
        return dict(userinfo)

    async def _id_token_rules(self) -> dict[str, Any]:
        """The ID token must be the provider's and for us. authlib checks `aud` only through
        `azp` unless told; told, it checks both before the nonce."""
        metadata = await self.client.load_server_metadata()
        return {
            "iss": {"essential": True, "values": [metadata["issuer"]]},
            "aud": {"essential": True, "values": [self.client.client_id]},
        }


def state_cookie(state: str) -> str:
    """The name of the cookie binding `state` to the browser that started it."""
    return f"{STATE_COOKIE}_{hashlib.sha256(state.encode()).hexdigest()[:8]}"


def bound_state(cookies: Mapping[str, str], state: str) -> str | None:
    """The state this browser's cookie for `state` holds: `state` itself if this browser
    started that sign-in (else None, or another state: authlib then finds no match)."""
    _, _, bound = cookies.get(state_cookie(state), "").partition(".")
    return bound or None


def state_binding(cookies: Mapping[str, str], state: str) -> tuple[str, str, list[str]]:
    """A new start's cookie (name, value) and the names of the pending ones it drops: the
    oldest, so that PENDING_SIGN_INS remain with it."""
    pending = sorted(
        (_start_number(value), name)
        for name, value in cookies.items()
        if name.startswith(f"{STATE_COOKIE}_")
    )
    number = pending[-1][0] + 1 if pending else 1
    dropped = [name for _, name in pending[: max(0, len(pending) - PENDING_SIGN_INS + 1)]]
    return state_cookie(state), f"{number}.{state}", dropped


def _start_number(value: str) -> int:
    number, _, _ = value.partition(".")
    return int(number) if number.isdecimal() and len(number) < 10 else 0  # the client's


def _browser_session(bound_state: str | None) -> dict[str, Any]:
    """The session authlib checks: it marks only the state this browser's cookie holds."""
    if not bound_state:
        return {}
    return {f"_state_{CLIENT_NAME}_{bound_state}": {"bound": True}}


def _profile(userinfo: dict[str, Any]) -> dict[str, Any]:
    email = str(userinfo.get("email") or "")
    username = userinfo.get("name") or userinfo.get("preferred_username") or email.split("@")[0]
    return {
        "email": email,
        "email_verified": True,
        "username": str(username or "user"),
        "picture": userinfo.get("picture"),
    }
