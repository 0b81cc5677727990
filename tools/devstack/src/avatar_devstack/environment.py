"""Where the project's parts are on disk, and the environment every process of a local stack
gets: where everything else listens."""

import json
import secrets
from pathlib import Path

from dotenv import dotenv_values

from avatar_devstack.ports import Ports, local_url
from avatar_devstack.secrets import DEMO_CLIENT_ID
from avatar_devstack.settings import StackSettings

REPO_ROOT = Path(__file__).resolve().parents[4]
GATEWAY_CONFIG_DIR = REPO_ROOT / "gateway" / "traefik"
OIDC_PROVIDER_DIR = REPO_ROOT / "tools" / "oidc-provider"


# For a stack whose many callers are all one client address (the test suite's shared stack, a
# load generator): every allowance counted per address, lifted. The per-caller limits are
# each such stack's own choice.
ONE_ADDRESS = {
    "ANON_IDS_PER_ADDRESS": "1000000",
    "GATEWAY_IN_FLIGHT_PER_ADDRESS": "1000000",
    "SIGN_IN_STARTS_PER_MIN": "1000000",
    "MAX_SESSIONS_PER_ADDRESS": "1000000",
    "MAX_STORED_SESSIONS_PER_ADDRESS": "1000000",
    "LLM_CALLS_PER_ADDRESS": "1000000",
    "TTS_RATE_PER_MIN_PER_ADDRESS": "1000000",
    "MAX_CHARACTERS_PER_ADDRESS": "1000000",
    "MAX_CHARACTER_BYTES_PER_ADDRESS": str(10**12),
    "MAX_PERSONAS_PER_ADDRESS": "1000000",
    "MAX_PERSONA_BYTES_PER_ADDRESS": str(10**12),
    "GEN3D_RATE_PER_HOUR_PER_ADDRESS": "1000000",
    "MAX_QUEUED_JOBS_PER_ADDRESS": "1000000",
}


def stack_env(ports: Ports, settings: StackSettings, base: dict[str, str]) -> dict[str, str]:
    """The environment every child gets: where everything else listens."""
    env = dict(base)
    env.update(
        REDIS_URL=f"redis://127.0.0.1:{ports.redis}/0",
        GATEWAY_PORT=str(ports.gateway),
        GATEWAY_METRICS_ADDRESS=f"127.0.0.1:{ports.gateway_metrics}",
        # Every file of dynamic/ (routers, services and rules): the routes are ours here.
        GATEWAY_PROVIDERS=json.dumps(
            {"file": {"directory": str(GATEWAY_CONFIG_DIR / "dynamic"), "watch": False}}
        ),
        GATEWAY_APPS_PROVIDER="file",  # the apps' load balancers: services.yml's
        GATEWAY_LOG_LEVEL=settings.gateway_log_level,
        GATEWAY_HEALTHCHECK_INTERVAL=settings.gateway_healthcheck_interval,
        GATEWAY_RESPONSE_TIMEOUT=settings.gateway_response_timeout,
        GATEWAY_READ_TIMEOUT=settings.gateway_read_timeout,
        GATEWAY_IN_FLIGHT_PER_ADDRESS=str(settings.gateway_in_flight_per_address),
        GATEWAY_TRUSTED_PROXIES=settings.gateway_trusted_proxies,
        FRONTEND_ORIGINS=settings.frontend_origins,
        MAX_REQUEST_BODY_BYTES=str(settings.max_request_body_bytes),
        # Redis's own limit, and what the services derive their user-data budgets from.
        REDIS_MAXMEMORY=settings.redis_maxmemory,
        PUBLIC_BASE_URL=settings.public_base_url or f"http://localhost:{ports.gateway}",
    )
    for name, port in ports.apps.items():
        env[f"{name.upper()}_URL"] = local_url(port)
        # Traefik's load-balancer list: every replica.
        env[f"{name.upper()}_URLS"] = ",".join(local_url(p) for p in ports.app_ports(name))
    if not ports.emulators:
        # No GPU server in sight: speak with the local engine unless told otherwise.
        env.setdefault("TTS_ENGINE", "local")
    if ports.emulators:
        env.update(
            OLLAMA_BASE_URL=local_url(ports.emulators["ollama"]),
            VLLM_BASE_URL=local_url(ports.emulators["openai"]),
            TTS_BASE_URL=local_url(ports.emulators["gpt-sovits"]),
            GEN3D_BASE_URL=local_url(ports.emulators["hunyuan3d"]),
        )
    if ports.oidc_provider:
        env.update(
            OIDC_DISCOVERY_URL=f"{local_url(ports.oidc_provider)}/.well-known/openid-configuration",
            GOOGLE_CLIENT_ID=DEMO_CLIENT_ID,
            GOOGLE_CLIENT_SECRET=secrets.token_urlsafe(24),  # this run's only
        )
        # No frontend in a demo unless one is configured (environment or .env, as auth reads
        # it): sign-in comes back to the gateway, whose /auth/callback leads to the playground.
        if not (env.get("FRONTEND_URL") or dotenv_values(".env").get("FRONTEND_URL")):
            env["FRONTEND_URL"] = env["PUBLIC_BASE_URL"]
    return env
