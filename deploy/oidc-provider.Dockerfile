# syntax=docker/dockerfile:1
# The demo OpenID provider (tools/oidc-provider) for compose's `demo` profile: never for
# production, it signs in anyone. Built from the repository root:
#   docker build -f deploy/oidc-provider.Dockerfile -t avatar-forge/oidc-provider .
FROM node:22-slim
WORKDIR /app
ENV NODE_ENV=production
# The packages from the lock alone: reused until package-lock.json changes.
COPY tools/oidc-provider/package.json tools/oidc-provider/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY tools/oidc-provider/server.mjs ./
USER 1000:1000
EXPOSE 9000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD ["node", "-e", "fetch('http://127.0.0.1:9000/.well-known/openid-configuration').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "server.mjs"]
