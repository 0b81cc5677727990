"""Prometheus metrics of every service, at `GET /metrics` on each replica (the gateway answers
it with a 404 from outside: Prometheus scrapes the replicas directly, and Traefik's own
metrics are on its internal `metrics` entry point).

What is measured, with prometheus-client:
- every request: `avatar_http_requests_total` and `avatar_http_request_duration_seconds`, by
  service, method, route template (never the raw path: ids would make a series each) and
  status, recorded where the access log is written;
- the GPU upstreams: `avatar_upstream_duration_seconds` by upstream (llm, tts) and outcome;
- the LLM's tokens (`avatar_llm_tokens_total`), the speech cache (`avatar_tts_cache_total`);
- gauges read when scraped, which each service supplies (`Scrape`): active chat sessions,
  gen3d queue depth.

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
    Gauge,
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
LLM_TOKENS = Counter(
    "avatar_llm_tokens_total", "Tokens the LLM server reported, by kind.", ["model", "kind"]
)
TTS_CACHE = Counter(
    "avatar_tts_cache_total", "Speech requests by how they were served.", ["result"]
)
CHAT_ACTIVE_SESSIONS = Gauge(
    "avatar_chat_active_sessions",
    "Chat sessions counted by the concurrent-user limit.",
    multiprocess_mode="mostrecent",
)
GEN3D_QUEUE = Gauge(
    "avatar_gen3d_queue_jobs",
    "3D jobs in the queue, by state.",
    ["state"],
    multiprocess_mode="mostrecent",
)

# A service's gauges, brought up to date before each scrape.
Scrape = Callable[[Request], Awaitable[None]]


def observe_request(service: str, scope: Scope, status: int, seconds: float) -> None:
    route = getattr(scope.get("route"), "path", None) or "unmatched"
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
