"""The error envelope of API.md and the one exception hierarchy that maps onto it.

Every failure a client can see leaves a service as
`{"success": false, "error": {"code": "snake_case", "message": "human text"}}` with a fitting
status. Routes raise `AppError` subclasses; the handlers below turn those, FastAPI's validation
errors, Starlette's 404/405, upstream (httpx) and Redis failures, and anything unhandled into
that envelope. No stack trace ever reaches a client: unhandled errors are logged, not echoed.

Each route declares the errors it can answer (`error_responses`), so the OpenAPI document lists
them per operation, status by status, with their codes and messages.
"""

import errno
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import httpx
import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from avatar_shared.envelope import ErrorBody, ErrorEnvelope

logger = logging.getLogger("avatar.errors")


class AppError(Exception):
    status_code = 500
    code = "internal_error"
    message = "Internal server error."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.message
        self.code = code or self.code
        self.headers = headers  # e.g. Retry-After on a 503 or 429
        super().__init__(self.message)

    @classmethod
    def described(cls) -> str:
        """What the OpenAPI document says it means: its message (see NamedNotFound)."""
        return cls.message


class BadRequest(AppError):
    status_code, code, message = 400, "bad_request", "The request is malformed."


class Unauthorized(AppError):
    status_code, code, message = 401, "unauthorized", "Login required."


class Forbidden(AppError):
    status_code, code, message = 403, "forbidden", "Not allowed."


class NotFound(AppError):
    status_code, code, message = 404, "not_found", "Not found."


class NamedNotFound(NotFound):
    """Something the client named by id does not exist: "<What> '<id>' does not exist."."""

    what, hint = "Item", ""  # hint: where to find the ones that exist

    def __init__(self, name: str) -> None:
        super().__init__(f"{self.what} '{name}' does not exist{self.hint}.")

    @classmethod
    def described(cls) -> str:
        return f"{cls.what} '…' does not exist{cls.hint}."


class Conflict(AppError):
    status_code, code, message = 409, "conflict", "Conflicts with the current state."


class PreconditionFailed(AppError):
    """An If-Match naming none of the versions the record has now (another write came first)."""

    status_code, code = 412, "precondition_failed"
    message = "It has changed since it was read (If-Match names another version); read it again."


class ValidationFailed(AppError):
    """A rule that depends on settings (limits), checked after the model parsed."""

    status_code, code, message = 422, "validation_error", "The request is invalid."


class UpstreamError(AppError):
    status_code, code, message = 502, "upstream_error", "An upstream server failed."


class ServiceUnavailable(AppError):
    status_code, code, message = 503, "service_unavailable", "A required server is unavailable."


class UpstreamTimeout(AppError):
    status_code, code, message = 504, "upstream_timeout", "An upstream server timed out."


# What the handlers and middleware below answer themselves (named here for the document).


class InvalidJson(BadRequest):
    code, message = "invalid_json", "The request body is not valid JSON."


class PayloadTooLarge(AppError):
    status_code, code, message = 413, "payload_too_large", "The request body is too large."


class RedisUnavailable(ServiceUnavailable):
    code, message = "redis_unavailable", "The data store is unavailable; try again."


class StorageFull(ServiceUnavailable):
    code = "storage_full"
    message = "The data store is full; nothing was stored. Try again later."


# Codes for statuses that Starlette raises itself (routing, method checks).
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


def error_response(
    status_code: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = ErrorEnvelope(error=ErrorBody(code=code, message=message))
    return JSONResponse(body.model_dump(), status_code=status_code, headers=headers)


def _answer(error: AppError) -> JSONResponse:
    return error_response(error.status_code, error.code, error.message, headers=error.headers)


def describe_errors(errors: list[Any]) -> str:
    """Pydantic's errors as one short line: `field: problem; ...`."""
    parts = []
    for err in errors[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


async def _app_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return _answer(exc)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(err.get("type") == "json_invalid" for err in errors):
        return _answer(InvalidJson())
    return _answer(ValidationFailed(describe_errors(errors)))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    headers = exc.headers
    if exc.status_code in (404, 405) and message in ("Not Found", "Method Not Allowed"):
        # Starlette's own routing errors: say which request missed.
        message = f"{message}: {request.method} {request.url.path}"
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
    return error_response(exc.status_code, code, message, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """The methods the resource at this path takes: those of the routes of the most specific
    path matching it (`/api/characters/import` is its own resource, not one of
    `/api/characters/{character_id}`), every route of that path together (GET and DELETE of
    one path are often two routes, and Starlette's own 405 names only the first's)."""
    path = request.scope["path"]
    root = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    matching = [
        route
        for route in _every_route(request.app.router.routes)
        if getattr(route, "methods", None) and route.path_regex.match(path)
    ]
    if not matching:
        return []
    resource = min((route.path for route in matching), key=lambda p: p.count("{"))
    allowed = set().union(*(route.methods for route in matching if route.path == resource))
    return [method for method in _METHODS if method in allowed]


def _every_route(routes: Iterable[Any]) -> Iterator[Any]:
    """The routes as they are served: an included router is one route object with no methods of
    its own (FastAPI 0.16x), its routes (prefixed) behind `effective_route_contexts`."""
    for route in routes:
        inner = getattr(route, "effective_route_contexts", None)
        if callable(inner):
            yield from inner()
        elif hasattr(route, "path_regex"):
            yield route


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


async def _redis_error(_: Request, exc: Exception) -> JSONResponse:
    logger.warning("redis unavailable: %s", exc)
    return _answer(RedisUnavailable())


async def _redis_refused(request: Request, exc: Exception) -> JSONResponse:
    """Redis answered with an error. Out of memory (maxmemory with `noeviction`, inside a
    script too) is a full store, not a bug: the write did not happen, reads still work."""
    if is_storage_full(exc):
        logger.error("redis refuses writes: %s", exc)
        return _storage_full()
    return await _unhandled(request, exc)


def is_storage_full(exc: Exception) -> bool:
    """Redis refused a write for want of room: out of memory (redis-py strips the `OOM` of a
    plain command's error into the type; a script's error keeps it in the text), or its disk
    is full (MISCONF)."""
    text = str(exc)
    return isinstance(exc, redis.exceptions.OutOfMemoryError) or "OOM" in text or "MISCONF" in text


async def _os_error(request: Request, exc: Exception) -> JSONResponse:
    """A full disk (or quota) is a full store too: the file was not kept (writers remove
    what they had begun), and what is stored already is untouched."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        logger.error("disk full: %s", exc)
        return _storage_full()
    return await _unhandled(request, exc)


async def _runtime_error(request: Request, exc: Exception) -> JSONResponse:
    """uvloop raises RuntimeError ("... the handler is closed"), not an OSError, when Redis's
    connection dies under a write (redis-py passes it on as it is): Redis unavailable, not a
    bug of ours. Any other RuntimeError is one."""
    if _raised_in_redis_client(exc):
        return await _redis_error(request, exc)
    return await _unhandled(request, exc)


def _raised_in_redis_client(exc: BaseException) -> bool:
    frame = exc.__traceback__
    while frame is not None:
        if frame.tb_frame.f_globals.get("__name__", "").startswith("redis."):
            return True
        frame = frame.tb_next
    return False


def _storage_full() -> JSONResponse:
    return _answer(StorageFull())


async def _upstream_timeout(_: Request, exc: Exception) -> JSONResponse:
    logger.warning("upstream timeout: %r", exc)
    return error_response(504, "upstream_timeout", "An upstream server did not answer in time.")


async def _upstream_unreachable(_: Request, exc: Exception) -> JSONResponse:
    logger.warning("upstream unreachable: %r", exc)
    return error_response(503, "upstream_unavailable", "An upstream server is unreachable.")


async def _upstream_broken(_: Request, exc: Exception) -> JSONResponse:
    # It answered, but badly: a broken connection mid-answer or an error status.
    logger.warning("upstream failed: %r", exc)
    return error_response(502, "upstream_error", "An upstream server failed.")


async def _unhandled(_: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    return _answer(AppError())


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(redis.exceptions.ConnectionError, _redis_error)
    app.add_exception_handler(redis.exceptions.TimeoutError, _redis_error)
    app.add_exception_handler(redis.exceptions.ResponseError, _redis_refused)
    app.add_exception_handler(OSError, _os_error)
    app.add_exception_handler(RuntimeError, _runtime_error)
    app.add_exception_handler(httpx.TimeoutException, _upstream_timeout)
    app.add_exception_handler(httpx.ConnectError, _upstream_unreachable)
    app.add_exception_handler(httpx.TransportError, _upstream_broken)
    app.add_exception_handler(httpx.HTTPStatusError, _upstream_broken)
    app.add_exception_handler(Exception, _unhandled)


# What can be named as an error a route answers: an AppError class, or an instance where the
# code or status is made at runtime (a peer's errors: `PeerUnavailable("characters", ...)`).
Answerable = type[AppError] | AppError
Errors = Answerable | Iterable["Errors"]  # one, or a group of them (groups may nest)
Responses = dict[int | str, dict[str, Any]]

# What any route can answer: a failure of ours (logged, never echoed). Declared on each
# router; every other status is declared by the routes themselves.
COMMON: tuple[Answerable, ...] = (AppError,)
# A route with parameters (path, query, form or body) answers 422 when they do not validate.
PARAMETERS: tuple[Answerable, ...] = (ValidationFailed,)
# A route that takes a JSON body: not JSON (400), too large (413), not valid (422).
JSON_BODY: tuple[Answerable, ...] = (InvalidJson, PayloadTooLarge, ValidationFailed)
# A route that takes a multipart/form-data body: a form that cannot be read is Starlette's 400.
FORM_BODY: tuple[Answerable, ...] = (BadRequest, PayloadTooLarge, ValidationFailed)
# A route that reads Redis; one that writes there (or to disk) can find it full too.
STORE: tuple[Answerable, ...] = (RedisUnavailable,)
STORE_WRITES: tuple[Answerable, ...] = (RedisUnavailable, StorageFull)


def error_responses(*errors: Errors) -> Responses:
    """The `responses=` of a route (or a router) that can answer `errors` (each an error, or
    a group of them such as `JSON_BODY`): per status, the envelope as the body and, as the
    description, each code with what it means. Errors of one status are listed together."""
    lines: dict[int, list[str]] = {}
    for error in _each(errors):
        message = error.message if isinstance(error, AppError) else error.described()
        line = f"- `{error.code}`: {message}"
        if line not in lines.setdefault(error.status_code, []):
            lines[error.status_code].append(line)
    return {
        status: {"model": ErrorEnvelope, "description": "\n".join(listed)}
        for status, listed in sorted(lines.items())
    }


def _each(errors: Iterable[Errors]) -> Iterable[Answerable]:
    for error in errors:
        if isinstance(error, AppError) or isinstance(error, type):
            yield error
        else:
            yield from _each(error)
