# syntax=docker/dockerfile:1
# Build stage: full dependencies, compile TypeScript to dist/.
FROM node:24-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY plugins ./plugins
COPY routes ./routes
COPY schemas ./schemas
COPY migrations ./migrations
COPY public ./public
RUN npm run build

# Runtime stage: production dependencies and the compiled app only, as a non-root user.
FROM node:24-slim AS runtime
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000 \
    SPOOL_DIR=/var/lib/flash-sale/spool
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
# The attempt spool (503'd attempts waiting for Postgres) belongs on a volume that outlives the container.
RUN mkdir -p /var/lib/flash-sale/spool && chown node:node /var/lib/flash-sale/spool
VOLUME /var/lib/flash-sale/spool
USER node
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# The Node flags of `npm start` (docs/architecture.md: an old-space limit under 2 GB keeps V8
# from letting garbage grow to 4x the live heap before a full GC).
CMD ["node", "--max-old-space-size=2000", "dist/src/server.js"]
