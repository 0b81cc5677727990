"""The one identity dependency: who is calling.

Every service resolves the caller through `current_identity` (route signatures use the
`UserId` or `CallerIdentity` aliases); nothing else reads credentials.

- A signed-in caller carries an access token (`Authorization: Bearer`, else the `access_token`
  cookie), an RS256 JWT of the auth service (see tokens.py). A token that is invalid, expired,
  revoked, for another audience or issuer, or signed by an unknown key is 401: never silently
  anonymous. Revocation costs one Redis EXISTS per signed-in request (none for anonymous
  ones): logout must hold on every replica at once, which a local cache would delay.
- Everyone else is an anonymous user of their own: an id minted by the first service they
  call, signed with HMAC-SHA256 under ANON_ID_SECRET and kept in the HttpOnly `anon_id`
  cookie. Any service checks it locally (no call to auth per request). A missing or
  tampered cookie gets a fresh id: an anonymous id grants nothing but its own data.
- Fresh ids are free to ask for, so each client address may mint ANON_IDS_PER_ADDRESS an
  hour (counted in Redis, for every replica). Past that, a caller without a cookie reads as
  its address's shared anonymous id (the same for every such request, derived from the
  address under the same key, no cookie set) and its writes are 429 with Retry-After (what a
  shared id stored, every neighbour could read and change): a client dropping its cookie
  cannot buy fresh budgets, and a household behind one NAT still gets ids of its own for a
  busy hour.
- Every identity carries its client address group (`client_address`): anonymous callers are
  counted per address as well as per id (see `rate.Caller.address_key`). A service calling a
  peer on a caller's behalf sends the caller's address along, signed under ANON_ID_SECRET
  (`X-Avatar-Client-Address`), so the peer counts the caller, not the calling service; an
  unsigned or badly signed one is ignored (a client cannot pick its address).
- A client-settable header (X-User-Id and the like) is never trusted.
- Writes (unsafe methods) from a foreign `Origin` (or, without one, `Sec-Fetch-Site:
  cross-site`) are refused (403) before anything is minted, with our cookies or without:
  form and multipart posts need no CORS preflight, so CORS alone would not stop them.
"""

import base64
import hashlib
import hmac
import ipaddress
import math
import secrets
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from avatar_shared.errors import (
    Answerable,
    AppError,
    Forbidden,
    RedisUnavailable,
    ServiceUnavailable,
    Unauthorized,
)
from avatar_shared.logs import user_id_var
from avatar_shared.settings import ServiceSettings
from avatar_shared.state import BaseState, lifespan_state
from avatar_shared.tokens import KeysUnavailable, TokenInvalid, TokenVerifier, revoked_key
from avatar_shared.windows import HIT, nonce, window_key

ACCESS_COOKIE = "access_token"
ANON_COOKIE = "anon_id"
ANON_PREFIX = "anon-"
SHARED_ANON_PREFIX = "anon-shared-"  # an address's shared anonymous id (see the docstring)
ADDRESS_HEADER = "X-Avatar-Client-Address"  # a peer call's caller address, signed
MINT_WINDOW_S = 3600
ANON_COOKIE_MAX_AGE_S = 365 * 24 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SET_COOKIES = "identity_set_cookies"  # request-state key read by IdentityCookieMiddleware


class InvalidToken(Unauthorized):
    code, message = "invalid_token", "The access token is invalid or expired; sign in again."


class TokenRevoked(Unauthorized):
    code, message = "token_revoked", "This access token was signed out; sign in again."


class LoginRequired(Unauthorized):
    code, message = "login_required", "Sign in to do this."


class AnonymousIdsSpent(AppError):
    status_code, code = 429, "rate_limited"
    message = "This address has been given its anonymous ids for now; sign in, or try again later."


class CrossOriginRefused(Forbidden):
    code, message = "cross_origin_refused", "Writes from another site's page are not accepted."


class AuthUnavailable(ServiceUnavailable):
    code, message = "auth_unavailable", "The auth service is unreachable; try again shortly."


# What resolving the caller can answer (for `error_responses`): on any route that asks who
# calls, a bad token (a revoked one is looked up in Redis); on a write, a refused origin, and
# a missing sign-in when AUTH_REQUIRED is set.
CALLER_ERRORS: tuple[Answerable, ...] = (
    InvalidToken,
    TokenRevoked,
    AuthUnavailable,
    RedisUnavailable,
)
WRITER_ERRORS: tuple[Answerable, ...] = (
    *CALLER_ERRORS,
    LoginRequired,
    CrossOriginRefused,
    AnonymousIdsSpent,
)


@dataclass(frozen=True)
class Identity:
    user_id: str
    signed_in: bool
    # How a service calls a peer on this caller's behalf (the peer verifies it again).
    forward_headers: dict[str, str] = field(default_factory=dict)
    new_anonymous: bool = False  # minted by this request: no cookie came in
    # The client's address group (`client_address`): whose per-address budgets apply.
    address: str = "-"


def cookie_header(name: str, value: str, max_age: int, secure: bool) -> str:
    """A Set-Cookie value: HttpOnly, SameSite=Lax, Path=/ (max_age 0 deletes it)."""
    cookie = SimpleCookie()
    cookie[name] = value
    morsel = cookie[name]
    morsel.update({"path": "/", "max-age": str(max_age), "samesite": "Lax"})
    morsel["httponly"] = True  # a flag: typeshed types Morsel's values as str
    morsel["secure"] = secure
    return morsel.OutputString()


class AnonymousIds:
    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def _signature(self, anon_id: str) -> str:
        digest = hmac.new(self.secret, anon_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def mint(self) -> tuple[str, str]:
        """A new anonymous id and its cookie value."""
        anon_id = ANON_PREFIX + secrets.token_urlsafe(16)
        return anon_id, f"{anon_id}.{self._signature(anon_id)}"

    def peer_signature(self, purpose: str, message: str) -> str:
        """A service's signature of `message` for `purpose` (a fixed word: `address`,
        `adopt`): the label makes it worthless as an id's signature or for another purpose.
        Only the holders of ANON_ID_SECRET (our services) can make one."""
        return self._signature(f"{purpose}:{message}")

    def signed_address(self, address: str) -> str:
        return f"{address} {self.peer_signature('address', address)}"

    def address_of(self, signed: str) -> str | None:
        """The address a peer signed (see `signed_address`), or None if the signature fails."""
        address, _, signature = signed.rpartition(" ")
        expected = self.peer_signature("address", address).encode()
        return address if hmac.compare_digest(signature.encode(), expected) else None

    def shared(self, address: str) -> tuple[str, str]:
        """The shared anonymous id of a client address, and its cookie value: the same for
        every request from there (only ANON_ID_SECRET's holder can tell it from another)."""
        # Its own label: the shared id is shown to clients (as an owner), the address's
        # signature (`signed_address`) never is, so no part of one may be the other.
        digest = hmac.new(self.secret, b"shared-id:" + address.encode(), hashlib.sha256).digest()
        anon_id = SHARED_ANON_PREFIX + base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()
        return anon_id, f"{anon_id}.{self._signature(anon_id)}"

    def verify(self, cookie_value: str) -> str | None:
        anon_id, _, signature = cookie_value.partition(".")
        if not anon_id.startswith(ANON_PREFIX):
            return None
        # Bytes: compare_digest refuses str with non-ASCII, which a client may send.
        expected = self._signature(anon_id).encode()
        return anon_id if hmac.compare_digest(signature.encode(), expected) else None


class IdentityResolver:
    def __init__(self, settings: ServiceSettings, verifier: TokenVerifier, redis: Redis) -> None:
        self.verifier, self.redis = verifier, redis
        self.anonymous = AnonymousIds(settings.anon_id_secret.get_secret_value().encode())
        self.allowed_origins = settings.allowed_origins
        self.secure = settings.secure_cookies
        self.auth_required = settings.auth_required
        self.mints_per_address = settings.anon_ids_per_address
        self._mint = redis.register_script(HIT)

    async def resolve(self, request: Request) -> Identity:
        writes = request.method not in SAFE_METHODS
        if writes:
            self.check_origin(request)
        token = self.token_of(request)
        address = self.address_of(request)
        if token is not None:
            return await self._signed_in(request, token, address)
        if writes and self.auth_required:
            raise LoginRequired()
        return await self._anonymous(request, address)

    def check_origin(self, request: Request) -> None:
        """A write from another site's page is refused, with our cookies or without: one
        from a browser with none yet would be given an anonymous id (Set-Cookie on that
        navigation) holding what the other site posted, which a later sign-in makes the
        victim's account's (login CSRF). An Origin decides (`null` included: a sandboxed
        frame, a post redirected across sites); without one, a browser's `Sec-Fetch-Site:
        cross-site` does. Neither header (curl, a peer service): not a browser's page."""
        origin = request.headers.get("origin")
        if origin is not None:
            foreign = origin.rstrip("/") not in self.allowed_origins
        else:
            foreign = request.headers.get("sec-fetch-site") == "cross-site"
        if foreign:
            raise CrossOriginRefused()

    @staticmethod
    def token_of(request: Request) -> str | None:
        authorization = request.headers.get("authorization")
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise InvalidToken("Authorization must be 'Bearer <access token>'.")
            return token.strip()
        return request.cookies.get(ACCESS_COOKIE)

    async def _signed_in(self, request: Request, token: str, address: str) -> Identity:
        try:
            claims = await self.verifier.verify(token)
        except KeysUnavailable as exc:
            raise AuthUnavailable() from exc
        except TokenInvalid as exc:
            self._drop_stale_cookie(request, token)
            raise InvalidToken() from exc
        if await self.redis.exists(revoked_key(claims.jti)):
            self._drop_stale_cookie(request, token)
            raise TokenRevoked()
        forward = self._forward({"Authorization": f"Bearer {token}"}, address)
        return Identity(claims.sub, True, forward, address=address)

    def _drop_stale_cookie(self, request: Request, token: str) -> None:
        """A browser whose cookie went bad gets it deleted with the 401, so its next request
        proceeds as anonymous rather than failing until someone clears cookies."""
        if request.cookies.get(ACCESS_COOKIE) == token:
            set_cookie(request, cookie_header(ACCESS_COOKIE, "", 0, self.secure))

    async def _anonymous(self, request: Request, address: str) -> Identity:
        cookie = request.cookies.get(ANON_COOKIE)
        anon_id = self.anonymous.verify(cookie) if cookie else None
        if anon_id is not None:
            forward = self._forward({"Cookie": f"{ANON_COOKIE}={cookie}"}, address)
            return Identity(anon_id, False, forward, address=address)
        if (wait := await self._mint_wait(address)) > 0:
            if request.method not in SAFE_METHODS:
                raise self._ids_spent(wait)
            anon_id, cookie = self.anonymous.shared(address)
            forward = self._forward({"Cookie": f"{ANON_COOKIE}={cookie}"}, address)
            return Identity(anon_id, False, forward, address=address)
        anon_id, cookie = self.anonymous.mint()
        set_cookie(request, cookie_header(ANON_COOKIE, cookie, ANON_COOKIE_MAX_AGE_S, self.secure))
        forward = self._forward({"Cookie": f"{ANON_COOKIE}={cookie}"}, address)
        return Identity(anon_id, False, forward, new_anonymous=True, address=address)

    def address_of(self, request: Request) -> str:
        """The caller's address group: the one a peer service signed for the caller it
        speaks for, else the client's own (`client_address`)."""
        signed = request.headers.get(ADDRESS_HEADER)
        address = self.anonymous.address_of(signed) if signed else None
        return address if address is not None else client_address(request)

    def _forward(self, credentials: dict[str, str], address: str) -> dict[str, str]:
        """How a peer is called for this caller: its credentials and its signed address."""
        return {**credentials, ADDRESS_HEADER: self.anonymous.signed_address(address)}

    async def _mint_wait(self, address: str) -> float:
        """Counts a mint against the address's hourly allowance: 0 when counted, else the
        seconds until one is free. Redis unreachable: a minute (the caller is the shared id
        for reads; writes could store nothing then anyway)."""
        key = window_key("anon-mint", address)
        try:
            wait = await self._mint(
                keys=[key], args=[self.mints_per_address, MINT_WINDOW_S, nonce()]
            )
        except (RedisError, OSError):
            return 60.0
        return float(wait)

    def _ids_spent(self, wait: float) -> AnonymousIdsSpent:
        """The shared id may read but not write: what it stored, every cookie-less neighbour
        behind the address could read, change and delete."""
        retry_after = max(1, math.ceil(wait))
        return AnonymousIdsSpent(
            f"This address has been given {self.mints_per_address} anonymous ids this hour; "
            f"sign in, or try again in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )


def client_address(request: Request) -> str:
    """The client's address group: an IPv4 address, or an IPv6 /64 (one subscriber's
    usual allocation, so rotating through it buys nothing). uvicorn takes the client address
    from the gateway's X-Forwarded-For, trusted from the gateway's address only, so a client
    cannot pick it."""
    host = request.client.host if request.client else "-"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # an IPv4 client on a dual-stack socket
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def set_cookie(request: Request, header: str) -> None:
    """Adds a Set-Cookie to this request's response, whatever response the route returns
    (FileResponse and streams included) and whether it succeeds or fails."""
    cookies = getattr(request.state, _SET_COOKIES, None)
    if cookies is None:
        cookies = []
        setattr(request.state, _SET_COOKIES, cookies)
    cookies.append(header)


class IdentityCookieMiddleware:
    """Pure ASGI: writes the cookies `set_cookie` queued into the response's headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_cookies(message: Message) -> None:
            if message["type"] == "http.response.start":
                for header in scope.get("state", {}).get(_SET_COOKIES, ()):
                    MutableHeaders(scope=message).append("set-cookie", header)
            await send(message)

        await self.app(scope, receive, send_with_cookies)


async def current_identity(request: Request) -> Identity:
    resolver = lifespan_state(request, BaseState)["identity"]
    identity = await resolver.resolve(request)
    request.state.user_id = identity.user_id
    user_id_var.set(identity.user_id)
    return identity


CallerIdentity = Annotated[Identity, Depends(current_identity)]


async def current_user_id(identity: CallerIdentity) -> str:
    return identity.user_id


UserId = Annotated[str, Depends(current_user_id)]
