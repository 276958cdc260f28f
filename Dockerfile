# syntax=docker/dockerfile:1
#
# account-sync container image (the Helm chart's default image).
#
#   docker build -t REGISTRY/account-sync:0.1.0 \
#     --build-arg ACCOUNT_SYNC_GIT_SHA="$(git rev-parse --short=12 HEAD)" .
#
# Stage 1 builds the release binary (librdkafka is compiled from source by rdkafka-sys and links
# the system OpenSSL); stage 2 is a slim Debian with only the shared libraries it needs, running as
# an unprivileged user. The chart runs it with a read-only root filesystem.

ARG RUST_VERSION=1
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev pkg-config zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# No .git in the build context: the revision for account_sync_build_info comes from here.
ARG ACCOUNT_SYNC_GIT_SHA=unknown
ENV ACCOUNT_SYNC_GIT_SHA=${ACCOUNT_SYNC_GIT_SHA} \
    CARGO_PROFILE_RELEASE_STRIP=debuginfo
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin account-sync \
 && install -D -m 0755 target/release/account-sync /out/account-sync

FROM debian:${DEBIAN_RELEASE}-slim
# ca-certificates: librdkafka verifies TLS brokers against the system CAs unless given
# ssl.ca.location; libssl3: the OpenSSL librdkafka links.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 account-sync \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin account-sync
COPY --from=builder /out/account-sync /usr/local/bin/account-sync
USER 10001:10001
# Admin server: /metrics, /healthz, /readyz.
EXPOSE 9090
LABEL org.opencontainers.image.title="account-sync" \
      org.opencontainers.image.description="Kafka to Tencent Cloud Chat account-sync worker" \
      org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["account-sync"]
CMD ["run"]
