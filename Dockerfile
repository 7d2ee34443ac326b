# wxgate — production image.
#   docker build -t wxgate .
#   docker run -p 8080:8080 -e WX_SECRET=... -v "$PWD/my-gateway.yaml:/etc/wxgate/gateway.yaml:ro" wxgate
# The configuration is read from /etc/wxgate/gateway.yaml (mount yours there, read-only).

FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY src ./src
# `npm ci` runs the `prepare` script, which compiles src/ into dist/.
RUN npm ci --no-audit --no-fund

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY config ./config
COPY gateway.yaml ./gateway.example.yaml
USER node
EXPOSE 8080 9464
ENV WXGATE_HEALTH_URL=http://127.0.0.1:8080/healthz
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["node", "-e", "fetch(process.env.WXGATE_HEALTH_URL).then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "dist/cli.js"]
CMD ["--config", "/etc/wxgate/gateway.yaml"]
