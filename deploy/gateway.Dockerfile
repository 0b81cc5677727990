# syntax=docker/dockerfile:1
# The gateway: Traefik with the project's own configuration (gateway/traefik) baked in, so
# compose and Kubernetes run the very rules `make run` does. Built from the repository root:
#   docker build -f deploy/gateway.Dockerfile -t avatar-forge/gateway .
# Where routes come from is the environment's choice (GATEWAY_PROVIDERS, see traefik.yml).
FROM traefik:v3.7
COPY gateway/traefik/ /etc/traefik/
ENV GATEWAY_CONFIG_DIR=/etc/traefik GATEWAY_PORT=8000 GATEWAY_METRICS_ADDRESS=:8090 \
    GATEWAY_LOG_LEVEL=WARN GATEWAY_READ_TIMEOUT=30s GATEWAY_RENDERED_CONFIG=/tmp/traefik.yml \
    GATEWAY_TRUSTED_PROXIES=""
# Not root: it binds unprivileged ports, and reads Docker through a socket proxy (compose)
# or the Kubernetes API (a service account), never a mounted socket.
USER 65532:65532
EXPOSE 8000 8090
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["traefik", "healthcheck", "--configFile=/tmp/traefik.yml"]
ENTRYPOINT ["/bin/sh", "/etc/traefik/render.sh"]
