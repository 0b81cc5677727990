"""Prometheus metrics of every service, at `GET /metrics` on each replica (the gateway answers
it with a 404 from outside: Prometheus scrapes the replicas directly, and Traefik's own
metrics are on its internal `metrics` entry point).

What is measured, with prometheus-client:
- every request: `avatar_http_requests_total` and `avatar_http_request_duration_seconds`, by
  service, method, route template (never the raw path: ids would make a series each) and
  status, recorded where the access log is written;
- the GPU upstreams: `avatar_upstream_duration_seconds` by upstream (llm, tts) and outcome.

A service's own metrics live in that service's `metrics` module and are served here with
these: the LLM's tokens and the active chat sessions (avatar_chat), the speech cache
(avatar_tts), the 3D queue's depth (avatar_gen3d). Gauges are read when scraped: each service
brings its own up to date first (`Scrape`).

Multiprocess-safe: with PROMETHEUS_MULTIPROC_DIR set (several worker processes behind one
port), values are kept in that folder and /metrics merges every process's (prometheus-client's
multiprocess mode); without it, the process's own registry is served.
"""

import os
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from redis.exceptions import RedisError
from starlette.types import Scope

# Seconds: from a cached read (ms) to a long LLM stream or a synthesis (a minute or more).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

HTTP_REQUESTS = Counter(
    "avatar_http_requests_total",
    "Requests answered, by route template and status.",
    ["service", "method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "avatar_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer (streams included).",
    ["service", "method", "route"],
    buckets=BUCKETS,
)
UPSTREAM_LATENCY = Histogram(
    "avatar_upstream_duration_seconds",
    "Time a call to a GPU upstream took, by its outcome (ok, or the error code).",
    ["upstream", "outcome"],
    buckets=BUCKETS,
)

# A service's gauges, brought up to date before each scrape.
Scrape = Callable[[Request], Awaitable[None]]


def observe_request(service: str, scope: Scope, status: int, seconds: float) -> None:
    # The template as the OpenAPI document writes it (`{session_id}`, not `{session_id:uuid}`).
    route = getattr(scope.get("route"), "path_format", None) or "unmatched"
    method = scope["method"]
    HTTP_REQUESTS.labels(service, method, route, str(status)).inc()
    HTTP_LATENCY.labels(service, method, route).observe(seconds)


@contextmanager
def upstream_call(upstream: str) -> Iterator[None]:
    """Times the block as one call to `upstream`; its outcome is the error's code, if any."""
    started, outcome = time.perf_counter(), "ok"
    try:
        yield
    except Exception as exc:
        outcome = getattr(exc, "code", type(exc).__name__)
        raise
    except BaseException:  # the caller went away (a closed stream, a cancelled request)
        outcome = "cancelled"
        raise
    finally:
        UPSTREAM_LATENCY.labels(upstream, outcome).observe(time.perf_counter() - started)


def metrics_router(scrape: Scrape | None) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/metrics")
    async def metrics(request: Request) -> Response:
        if scrape is not None:
            try:
                await scrape(request)
            except (RedisError, OSError):  # Redis down: the gauges keep their last values
                pass
        return Response(generate_latest(_registry()), media_type=CONTENT_TYPE_LATEST)

    return router


def _registry() -> CollectorRegistry:
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged)
    return merged
