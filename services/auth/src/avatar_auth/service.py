"""Sign-in with an OpenID provider, the users, and the access tokens every service verifies;
at a sign-in, what the browser made anonymously moves to the account (adoption.py)."""

import logging
import re
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import Request
from fastapi.responses import RedirectResponse
from redis.asyncio import Redis
from starlette.responses import Response

from avatar_auth.adoption import Adopter
from avatar_auth.errors import InvalidNext, NotSignedIn, SignInDisabled
from avatar_auth.provider import OpenIdProvider, SignInFailed, state_binding, state_cookie
from avatar_auth.schemas import User
from avatar_auth.settings import AuthSettings
from avatar_auth.store import UserStore
from avatar_shared.identity import (
    ACCESS_COOKIE,
    ANON_COOKIE,
    SHARED_ANON_PREFIX,
    Identity,
    IdentityResolver,
    InvalidToken,
    client_address,
    cookie_header,
)
from avatar_shared.rate import RateLimit
from avatar_shared.tokens import SigningKeys, TokenInvalid

logger = logging.getLogger("avatar.auth")

PROVIDER = "google"  # the one provider API.md names; the demo provider stands in for it


# A path on this site: one slash first (two would name another host), no backslash (some
# browsers read it as a slash), no control characters. The OpenAPI document says the same.
NEXT_PATH = r"^/([^/\\\x00-\x1f\x7f-\x9f][^\\\x00-\x1f\x7f-\x9f]*)?$"


def checked_next(next_path: str | None) -> str | None:
    """A path on the frontend's own site, or InvalidNext: never another origin (`//evil`,
    `/\\evil`, `https://evil`), so sign-in cannot be made into an open redirect."""
    if next_path is None:
        return None
    if not re.fullmatch(NEXT_PATH, next_path):
        raise InvalidNext()
    return next_path


class AuthService:
    def __init__(
        self,
        settings: AuthSettings,
        redis: Redis,
        keys: SigningKeys,
        identity: IdentityResolver,
        http: httpx.AsyncClient,
    ) -> None:
        self.settings, self.keys, self.identity = settings, keys, identity
        self.adopter = Adopter(settings, http, identity.anonymous)
        self.users = UserStore(redis)
        self.provider = OpenIdProvider(settings, redis) if settings.sign_in_enabled else None
        # Each start keeps its state in Redis for LOGIN_TIMEOUT_S and costs a provider round.
        self.starts = RateLimit(
            redis, "sign-in", settings.sign_in_starts_per_min, 60, "sign-in starts",
            "a minute from one address",
        )  # fmt: skip
        self.frontend = settings.frontend_url.rstrip("/")
        self.secure = settings.secure_cookies

    async def close(self) -> None:
        if self.provider is not None:
            await self.provider.close()

    async def login(self, request: Request, next_path: str | None) -> Response:
        """Starts are counted per client address group (`client_address`)."""
        next_path = checked_next(next_path)
        if self.provider is None:
            raise SignInDisabled()
        await self.starts.hit(client_address(request))
        url, state = await self.provider.start(next_path)
        response = RedirectResponse(url, status_code=302)
        name, value, dropped = state_binding(request.cookies, state)
        binding = cookie_header(name, value, self.settings.login_timeout_s, self.secure)
        response.headers.append("set-cookie", binding)
        for old in dropped:
            response.headers.append("set-cookie", cookie_header(old, "", 0, self.secure))
        return response

    async def callback(self, request: Request) -> Response:
        """Back at the frontend's callback page either way; the sign-in state cookie is
        spent either way."""
        if self.provider is None:
            raise SignInDisabled()
        try:
            account = await self.provider.finish(request)
        except SignInFailed as failure:
            logger.warning("sign-in failed", extra={"fields": {"reason": str(failure)}})
            return self._back_from_sign_in(request, {"error": failure.code})
        user = await self.users.signed_in(PROVIDER, account.sub, account.profile)
        token = self.keys.issue(user["id"])
        logger.info("signed in", extra={"fields": {"signed_in_user": user["id"]}})
        query = {"next": account.next_path} if account.next_path else {}
        response = self._back_from_sign_in(request, query)
        cookie = cookie_header(ACCESS_COOKIE, token, self.settings.token_lifetime_s, self.secure)
        response.headers.append("set-cookie", cookie)
        if await self._adopt_anonymous_data(request, user["id"]):
            # Nothing is left with the anonymous id: the browser drops it, and gets a fresh
            # one if it is used anonymously again (after signing out). Otherwise it keeps it,
            # so what stayed is still its own, and the next sign-in asks the peers again.
            response.headers.append("set-cookie", cookie_header(ANON_COOKIE, "", 0, self.secure))
        return response

    async def _adopt_anonymous_data(self, request: Request, user_id: str) -> bool:
        """What the browser's anonymous id keeps moves to the account (avatar_auth.adoption);
        True when every peer moved all of it. No valid anonymous cookie: nothing to move."""
        cookie = request.cookies.get(ANON_COOKIE)
        anon_id = self.identity.anonymous.verify(cookie) if cookie else None
        if anon_id is None or anon_id.startswith(SHARED_ANON_PREFIX):
            return False
        return await self.adopter.adopt(anon_id, user_id)

    def _back_from_sign_in(self, request: Request, query: dict[str, str]) -> Response:
        """The callback's own binding is spent; the browser's other pending sign-ins stay."""
        response = self._to_frontend("/auth/callback", query)
        spent = state_cookie(request.query_params.get("state", ""))
        response.headers.append("set-cookie", cookie_header(spent, "", 0, self.secure))
        return response

    async def me(self, identity: Identity) -> User:
        user = await self.users.get(identity.user_id) if identity.signed_in else None
        if user is None:
            raise NotSignedIn()
        return User.model_validate(user)

    async def logout(self, request: Request) -> Response:
        """Always ends in the redirect: a token that is already bad is simply dropped. Both
        the Bearer token and the cookie's are revoked: the cookie is deleted by this
        response, but a copy of it must not go on working either."""
        self.identity.check_origin(request)
        for token in self._tokens_of(request):
            try:
                claims = await self.identity.verifier.verify(token)
            except TokenInvalid:
                continue  # not ours, or already expired: nothing to revoke
            await self.users.revoke(claims.jti, claims.exp)
        response = self._to_frontend("/", {}, status_code=303)
        response.headers.append("set-cookie", cookie_header(ACCESS_COOKIE, "", 0, self.secure))
        return response

    def _tokens_of(self, request: Request) -> set[str]:
        """The request's access tokens: the Bearer one (if well formed) and the cookie's."""
        try:
            bearer = self.identity.token_of(request)
        except InvalidToken:
            bearer = None
        return {token for token in (bearer, request.cookies.get(ACCESS_COOKIE)) if token}

    def jwks(self) -> dict[str, Any]:
        return self.keys.public_jwks()

    def _to_frontend(self, path: str, query: dict[str, str], status_code: int = 302) -> Response:
        url = self.frontend + path + (f"?{urlencode(query)}" if query else "")
        return RedirectResponse(url, status_code=status_code)
