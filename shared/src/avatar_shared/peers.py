"""Calls to another Avatar Forge service over HTTP (services never import each other's code).

`PeerClient` sends a request, unwraps the envelope of API.md and maps every failure to one of
two typed errors, both `PeerError`:
- `PeerUnavailable` (503, code `<service>_unavailable`): unreachable, too slow, a server
  error, or an answer that is not the envelope;
- `PeerRejected` (the peer's own 4xx status, code and message): the peer refused the request.

Each peer's paths and limits live in one small client per peer (the caller's `peers/`
package) built on this one, never in the code that uses it.
"""

from typing import Any

import httpx

from avatar_shared.errors import AppError, ServiceUnavailable


class PeerError(AppError):
    def __init__(self, service: str, message: str, *, code: str) -> None:
        super().__init__(message, code=code)
        self.service = service


class PeerUnavailable(PeerError, ServiceUnavailable):
    def __init__(self, service: str, why: str) -> None:
        message = f"The {service} service {why.rstrip('.')}."
        super().__init__(service, message, code=f"{service}_unavailable")


class PeerRejected(PeerError):
    def __init__(self, service: str, status_code: int, code: str, message: str) -> None:
        super().__init__(service, message, code=code)
        self.status_code = status_code


class PeerClient:
    def __init__(
        self, http: httpx.AsyncClient, service: str, base_url: str, timeout_s: float | None = None
    ) -> None:
        """`timeout_s` bounds each call (default: the client's own timeout)."""
        self.http = http
        self.service = service
        self.base_url = base_url.rstrip("/")
        self.timeout = httpx.USE_CLIENT_DEFAULT if timeout_s is None else timeout_s

    async def get(self, path: str, headers: dict[str, str] | None = None) -> Any:
        """The `data` of the envelope of `GET {base_url}{path}`; `headers` as for `post`
        (an owner-only read: the caller's `Identity.forward_headers`)."""
        return await self._call("GET", path, headers=headers)

    async def post(
        self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> Any:
        """`headers` carry the caller's credentials when acting on a user's behalf."""
        return await self._call("POST", path, json=body, headers=headers)

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self.http.request(
                method, f"{self.base_url}{path}", timeout=self.timeout, **kwargs
            )
        except httpx.TimeoutException as exc:
            raise PeerUnavailable(self.service, "did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise PeerUnavailable(self.service, f"is unreachable ({type(exc).__name__})") from exc
        body = _json(response)
        if response.is_success:
            if not isinstance(body, dict) or "data" not in body:
                raise PeerUnavailable(self.service, "sent a malformed answer")
            return body["data"]
        code, message = _error_of(body, response)
        if response.is_client_error:
            raise PeerRejected(self.service, response.status_code, code, message)
        raise PeerUnavailable(self.service, f"answered {response.status_code}: {message}")


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error_of(body: Any, response: httpx.Response) -> tuple[str, str]:
    """The envelope's code and message, or what can be made of a body that is not one."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error.get("code", "peer_error")), error["message"]
    return "peer_error", response.text[:200] or response.reason_phrase
