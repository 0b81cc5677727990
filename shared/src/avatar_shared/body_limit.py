"""Request-body size limit for services whose responses stream (chat's SSE, tts audio).

The gateway limits bodies with Traefik's buffering middleware, but in Traefik 3.7 that
middleware also buffers whole responses, which would hold back every SSE event until the
reply ends. The streaming routers therefore skip it and these services enforce the same
`MAX_REQUEST_BODY_BYTES` themselves, as the request arrives.
"""

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from avatar_shared.errors import PayloadTooLarge, error_response


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = self._too_large()
            await response(scope, receive, send)
            return
        received = 0
        rejected = False

        async def counting_receive() -> Message:
            # A chunked body declares no length: count it as it arrives. Past the limit, answer
            # 413 here and tell the app the client left, so it stops reading.
            nonlocal received, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                rejected = True
                await self._too_large()(scope, receive, send)
                return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not rejected:  # after a 413 the app's own answer must not follow it
                await send(message)

        await self.app(scope, counting_receive, guarded_send)

    def _too_large(self) -> Response:
        message = f"The request body is larger than {self.max_bytes} bytes."
        return error_response(PayloadTooLarge.status_code, PayloadTooLarge.code, message)
