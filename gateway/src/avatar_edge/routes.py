from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse

from avatar_edge.openapi_source import TITLE
from avatar_shared.errors import error_response

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=PlainTextResponse)
async def root() -> str:
    return "Avatar Forge Backend Running"


@router.get("/api/health")
async def health(request: Request) -> JSONResponse:
    state = request.app.state
    data = await state.health_cache.get(state.settings, state.http, state.redis)
    return JSONResponse({"success": True, "data": data})


@router.get("/api/openapi.json")
async def openapi(request: Request) -> JSONResponse:
    state = request.app.state
    return JSONResponse(await state.merged_openapi.get(state.settings, state.http))


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/api/openapi.json", title=f"{TITLE} - Swagger UI")


@router.get("/redoc")
async def redoc() -> HTMLResponse:
    return get_redoc_html(openapi_url="/api/openapi.json", title=f"{TITLE} - ReDoc")


@router.api_route("/_errors/{status}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
async def gateway_error(status: int) -> JSONResponse:
    """Traefik's errors middleware fetches this to replace its plain-text error pages."""
    if status == 413:
        return error_response(413, "payload_too_large", "The request body is too large.")
    return error_response(404, "not_found", "No such error page.")
