# syntax=docker/dockerfile:1
# entra-sync container image: one `entra-sync` binary that runs as `serve` (the API), `worker`
# (a Temporal worker) or `migrate` (a one-shot job), chosen by the container's command.
#
# Stage 1 builds the release binary (the Temporal SDK needs protoc at build time); stage 2 is a
# distroless runtime with glibc, CA certificates (rustls reads the system roots) and a non-root
# user, and nothing else: no shell, no package manager, no curl. The HEALTHCHECK therefore uses
# the binary itself (`entra-sync healthcheck`, an HTTP GET of /healthz).

FROM rust:1.95-bookworm AS builder
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p entra-sync --bin entra-sync \
    && install -D -m 0755 target/release/entra-sync /out/entra-sync

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="entra-sync" \
      org.opencontainers.image.description="Keeps PSA contacts in step with Microsoft Entra ID" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/entra-sync /usr/local/bin/entra-sync
# The defaults a container needs: listen on all interfaces (the image's network is the
# boundary), JSON logs for a log collector, and /metrics + /healthz on their own port.
ENV ENTRA_SYNC_LISTEN=0.0.0.0:8080 \
    ENTRA_SYNC__METRICS__LISTEN=0.0.0.0:9464 \
    ENTRA_SYNC_LOG_FORMAT=json
# distroless "nonroot" is uid/gid 65532.
USER 65532:65532
EXPOSE 8080 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/entra-sync", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/entra-sync"]
CMD ["serve"]
