# wxgate — production image.
#   docker build -t wxgate .
#   docker run --read-only --tmpfs /tmp -p 8080:8080 -e WX_SECRET=... \
#     -v "$PWD/my-gateway.yaml:/etc/wxgate/gateway.yaml:ro" wxgate
# The configuration is read from /etc/wxgate/gateway.yaml (mount yours there, read-only); docker-compose.yml
# runs two replicas with Redis for a local trial.
#
# Runs as the image's unprivileged `node` user (uid 1000) and writes nothing to its filesystem: logs are
# JSON lines on stdout, sessions live in Redis (or memory), the configuration is only read. So the
# container runs with a read-only root filesystem (--read-only, or readOnlyRootFilesystem in Kubernetes);
# give it a tmpfs /tmp out of habit, the gateway itself does not use one.

# --- build: all dependencies, compile src/ into dist/ ---------------------------------------------------
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` would compile before src/ is here; the build is its own step below
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# --- production dependencies only -------------------------------------------------------------------------
FROM node:20-bookworm-slim AS deps
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# --- runtime ---------------------------------------------------------------------------------------------
FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
# everything stays owned by root: the node user can read it, not change it
COPY package.json ./
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY config ./config
COPY gateway.yaml ./gateway.example.yaml
# the image's `node` user, by number so that Kubernetes' runAsNonRoot can verify it
USER 1000:1000
# 8080: the gateway; 9464: metrics when metrics.port is set (config/production.example.yaml)
EXPOSE 8080 9464
# no curl in slim images: node's fetch. Set WXGATE_HEALTH_URL if server.port is not 8080.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch(process.env.WXGATE_HEALTH_URL || 'http://127.0.0.1:8080/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
CMD ["node", "dist/cli.js", "--config", "/etc/wxgate/gateway.yaml"]
