from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse

from avatar_edge.deps import HealthDep, OpenApiDep
from avatar_edge.openapi_source import TITLE
from avatar_shared.errors import error_response

router = APIRouter(tags=["system"])


@router.get("/", response_class=PlainTextResponse)
async def root() -> str:
    return "Avatar Forge Backend Running"


@router.get("/api/health", summary="State of the backend, its services and upstreams")
async def health(health: HealthDep) -> JSONResponse:
    return JSONResponse({"success": True, "data": await health.get()})


@router.get("/api/openapi.json", summary="This document")
async def openapi(document: OpenApiDep) -> JSONResponse:
    return JSONResponse(await document.get())


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/api/openapi.json", title=f"{TITLE} - Swagger UI")


@router.get("/redoc")
async def redoc() -> HTMLResponse:
    return get_redoc_html(openapi_url="/api/openapi.json", title=f"{TITLE} - ReDoc")


@router.api_route(
    "/_errors/{status}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False
)
async def gateway_error(status: int) -> JSONResponse:
    """Traefik's errors middleware fetches this to replace its plain-text error pages."""
    if status == 413:
        return error_response(413, "payload_too_large", "The request body is too large.")
    return error_response(404, "not_found", "No such error page.")
