"""The service app factory: one place that wires what every service shares.

A service calls `create_service_app` with its name, settings, router and upstream checks and
gets a FastAPI app with JSON logs and request ids, the error envelope, the Redis pool and an
HTTP client opened and closed in the lifespan, and the health probes.

Lifespan state is typed: the lifespan yields `BaseState` (redis, http) merged with
what the service's own `state` factory yields (its TypedDict of resources, built from the base
state). Starlette hands that dict to every request as `request.state`, where the service's
`deps.py` reads it through `avatar_shared.state.lifespan_state`; nothing is kept on `app.state`.
"""

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI
from redis.asyncio import Redis

from avatar_shared.body_limit import BodySizeLimitMiddleware
from avatar_shared.errors import install_error_handlers
from avatar_shared.health import UpstreamCheck, health_router
from avatar_shared.identity import IdentityCookieMiddleware, IdentityResolver
from avatar_shared.logs import RequestContextMiddleware, configure_logging
from avatar_shared.metrics import Scrape, metrics_router
from avatar_shared.redis_pool import open_redis
from avatar_shared.registry import APPS_BY_NAME
from avatar_shared.settings import ServiceSettings, SharedSettings
from avatar_shared.state import BaseState
from avatar_shared.tokens import RemoteJwks, TokenVerifier

# Health probes and internal calls must fail fast rather than hold a request open. The edge
# bounds its call to /upstreamz by HEALTH_TIMEOUT_S (1.5 s by default): this stays below it.
HEALTH_TIMEOUT_S = 1.0
INTERNAL_HTTP_TIMEOUT = httpx.Timeout(5.0, connect=1.0)


# A service's own resources: an async generator that opens them from the base state, yields
# the service's TypedDict of them, and closes them when the app stops.
ServiceState = Callable[[BaseState], AsyncIterator[Mapping[str, Any]]]


def open_http_client(timeout: httpx.Timeout = INTERNAL_HTTP_TIMEOUT) -> httpx.AsyncClient:
    """One pooled client per process; `trust_env=False` keeps proxy variables out of loopback.
    It keeps no cookies: a client shared by every request must never carry one caller's
    cookie into another caller's call (credentials go per call, see PeerClient.post)."""
    no_cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    return httpx.AsyncClient(
        timeout=timeout, trust_env=False, follow_redirects=False, cookies=no_cookies
    )


def remote_identity(
    settings: ServiceSettings, redis: Redis, http: httpx.AsyncClient
) -> IdentityResolver:
    keys = RemoteJwks(
        http, settings.auth_url, settings.jwks_refresh_floor_s, settings.jwks_max_age_s
    )
    verifier = TokenVerifier(keys, settings.token_issuer, settings.token_audience)
    return IdentityResolver(settings, verifier, redis)


def create_service_app(
    service: str,
    settings: SharedSettings,
    router: APIRouter,
    *,
    state: ServiceState | None = None,
    upstream_checks: Mapping[str, UpstreamCheck] | None = None,
    own_docs: bool = True,
    streams_responses: bool | None = None,
    scrape: Scrape | None = None,
) -> FastAPI:
    """`service` names the app; one of the registry's gets its description in its OpenAPI
    document (a test's own app gets none).
    `state` opens the service's own resources (see ServiceState).
    `own_docs=False` leaves /openapi.json, /docs and /redoc to the caller (the edge).
    `streams_responses=True` makes the service limit request bodies itself (see body_limit);
    by default, an app of the registry does when its spec `streams` (the gateway does not
    buffer its requests then), and any other app does not.
    `scrape` brings the service's own gauges up to date before /metrics answers.

    Every dependency of the services is `async def`, even when it awaits nothing: FastAPI
    runs a plain `def` dependency in a worker thread, a thread hop per request (measured:
    a sixth of the chat service's CPU under load).
    """
    configure_logging(service, settings.log_level)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        redis = open_redis(settings.redis_url, settings.redis_timeout_s)
        async with redis, open_http_client() as http:
            base = BaseState(redis=redis, http=http)
            if isinstance(settings, ServiceSettings):
                base["identity"] = remote_identity(settings, redis, http)
            if state is None:
                yield dict(base)
                return
            async with asynccontextmanager(state)(base) as own:
                yield {**base, **own}

    spec = APPS_BY_NAME.get(service)
    if streams_responses is None:
        streams_responses = spec is not None and spec.streams
    docs_urls: dict[str, Any] = (
        {} if own_docs else {"openapi_url": None, "docs_url": None, "redoc_url": None}
    )
    app = FastAPI(
        title=f"Avatar Forge {service}",
        description=spec.description if spec else "",
        version="0.1.0",
        lifespan=lifespan,
        **docs_urls,
    )
    if streams_responses:
        app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_body_bytes)
    app.add_middleware(IdentityCookieMiddleware)
    app.add_middleware(RequestContextMiddleware, service=service)
    install_error_handlers(app)
    app.include_router(health_router(service, upstream_checks or {}, HEALTH_TIMEOUT_S))
    app.include_router(metrics_router(scrape))
    app.include_router(router)
    return app
