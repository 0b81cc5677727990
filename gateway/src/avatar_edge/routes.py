from collections.abc import Awaitable, Callable
from importlib import resources
from urllib.parse import urlencode

from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse

from avatar_edge.deps import HealthDep, OpenApiDep
from avatar_edge.openapi_source import TITLE
from avatar_shared.errors import NotFound, error_response
from avatar_shared.registry import SERVICES, AppSpec

router = APIRouter(tags=["system"])

# Swagger UI's and ReDoc's scripts and styles, served from the fastapi-offline wheel (which
# ships them) rather than from a CDN: the docs must work on a GPU LAN without internet.
DOCS_ASSETS_PATH = "/docs-assets"
DOCS_ASSETS_DIR = resources.files("fastapi_offline") / "static"
# The playground page: plain files (HTML, an ES module, the vendored model-viewer).
PLAYGROUND_PATH = "/playground"
PLAYGROUND_DIR = resources.files("avatar_edge") / "playground"


@router.get("/", response_class=PlainTextResponse)
async def root() -> str:
    return "Avatar Forge Backend Running"


@router.get("/api/health", summary="State of the backend, its services and upstreams")
async def health(health: HealthDep) -> JSONResponse:
    return JSONResponse({"success": True, "data": await health.get()})


@router.get("/api/openapi.json", summary="This document")
async def openapi(document: OpenApiDep) -> JSONResponse:
    return JSONResponse(await document.get())


@router.get("/docs", response_class=HTMLResponse, summary="Swagger UI of the whole API")
async def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/api/openapi.json",
        title=f"{TITLE} - Swagger UI",
        swagger_js_url=f"{DOCS_ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{DOCS_ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{DOCS_ASSETS_PATH}/favicon.png",
    )


# ReDoc's page may load nothing from another origin: its sidebar's "API docs by Redocly" logo
# is an image on cdn.redoc.ly, which the GPU LAN may not reach (and a reader's browser would
# tell that host who reads our docs). The page's own policy (a <meta>, as the gateway's
# Content-Security-Policy header is its own) allows this origin only, and images from data:;
# refused, the logo hides itself (ReDoc drops it when it fails to load). ReDoc styles itself
# with <style> elements it makes, and runs its search in a worker made from a blob.
REDOC_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "worker-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'none'"
)


@router.get("/redoc", response_class=HTMLResponse, summary="ReDoc of the whole API")
async def redoc() -> HTMLResponse:
    page = get_redoc_html(
        openapi_url="/api/openapi.json",
        title=f"{TITLE} - ReDoc",
        redoc_js_url=f"{DOCS_ASSETS_PATH}/redoc.standalone.js",
        redoc_favicon_url=f"{DOCS_ASSETS_PATH}/favicon.png",
        with_google_fonts=False,
    )
    policy = f'<meta http-equiv="Content-Security-Policy" content="{REDOC_CSP}">'
    html = bytes(page.body).decode().replace("<head>", f"<head>\n    {policy}", 1)
    return HTMLResponse(html)


@router.get("/auth/callback", include_in_schema=False)
async def back_from_sign_in(error: str | None = None) -> RedirectResponse:
    """Where auth sends the browser after sign-in when the gateway is the frontend (FRONTEND_URL
    under `make demo`): to the playground, with the failure if any. Never to a place the query
    names, so this is no open redirect."""
    query = f"?{urlencode({'sign_in_error': error})}" if error else ""
    return RedirectResponse(f"{PLAYGROUND_PATH}/{query}", status_code=302)


# A service's paths reach the edge only when no replica of the service can take them: Traefik
# fails over to the edge when every replica's health check fails (make run, compose), and has
# no route to a service with no ready replica (Kubernetes, compose), so its paths fall to the
# edge's catch-all. Either way the caller gets this, not Traefik's plain "no available server"
# nor the catch-all's 404. A replica back up is seen within a health-check interval or two.
UNAVAILABLE_RETRY_AFTER_S = 5
EVERY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _no_replica(spec: AppSpec) -> Callable[[], Awaitable[JSONResponse]]:
    async def no_replica() -> JSONResponse:
        return error_response(
            503, "service_unavailable",
            f"The {spec.name} service has no replica available right now; try again shortly.",
            headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)},
        )  # fmt: skip

    return no_replica


def service_paths(prefixes: tuple[str, ...]) -> list[str]:
    """The edge's route paths matching what the gateway routes for these prefixes (see
    AppSpec.prefixes): a prefix and everything below it, or below it only when it ends in /."""
    paths = []
    for prefix in prefixes:
        if not prefix.endswith("/"):
            paths.append(prefix)
        paths.append(f"{prefix.rstrip('/')}/{{rest:path}}")
    return paths


async def _no_one_s() -> JSONResponse:
    raise NotFound()


for _spec in SERVICES:
    for _path in service_paths(_spec.prefixes):
        router.add_api_route(
            _path, _no_replica(_spec), methods=EVERY_METHOD, include_in_schema=False
        )
    for _prefix in _spec.prefixes:
        if _prefix.endswith("/"):
            # Only the paths below it are the service's: the prefix itself stays no one's
            # (404), rather than a redirect to the service's path with the slash.
            router.add_api_route(
                _prefix.rstrip("/"), _no_one_s, methods=EVERY_METHOD, include_in_schema=False
            )
