# infertel image: the agent (`infertel run`) and the injection webhook (`infertel inject-webhook`).
# Not built in this project's CI (no container engine there); see the README.

# Build stage: Node 24 LTS on Debian bookworm (glibc 2.36; the addon needs glibc >= 2.34) with Rust for
# the NVML addon.
FROM node:24-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cargo rustc \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json tsconfig.json ./
COPY agent agent
COPY config config
COPY ui ui
COPY native native
COPY scripts scripts
COPY test test
COPY bench bench
# npm ci rejects the lock file over @napi-rs/cli's optional platform packages (an npm 11 quirk); npm install does not.
RUN npm install --no-audit --no-fund \
 && npm prune --omit=dev \
 && test -f native/infertel-nvml.linux-x64-gnu.node -o -f native/infertel-nvml.linux-arm64-gnu.node

# Runtime stage: the same Node on a slim base, non-root, no shell needed at run time; tini for signals.
FROM node:24-bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules node_modules
COPY --from=build /src/dist/agent dist/agent
COPY --from=build /src/config config
COPY --from=build /src/ui ui
COPY --from=build /src/native/index.js /src/native/index.d.ts /src/native/package.json native/
COPY --from=build /src/native/*.node native/
USER 65532:65532
EXPOSE 9400 8443
# A smaller young generation keeps RSS down (research: 118 MB -> 63 MB peak under scrape load).
ENV NODE_ENV=production NODE_OPTIONS="--max-semi-space-size=2 --max-old-space-size=160"
ENTRYPOINT ["/usr/bin/tini", "--", "node", "/app/dist/agent/main.js"]
CMD ["run"]
