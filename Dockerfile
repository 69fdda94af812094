# secret-reloader container image: one static binary on an empty base.
#
#   docker build -t secret-reloader:0.1.0 .
#
# The image holds a single file, /usr/local/bin/secret-reloader (a static x86_64 musl binary, about
# 3.4 MiB; on the default PATH, so `kubectl exec POD -c secret-reloader -- secret-reloader doctor`
# works). It runs as 65532:65532, a numeric user that needs no /etc/passwd, and serves /metrics,
# /healthz, /readyz and /status on port 9533. There is no shell, no package manager and no CA
# bundle: https:// reload and verify calls name their CA with --tls-ca-file.
#
# The build stage needs BuildKit (the default builder since Docker 23) for its cache mounts.
# scripts/ci-packaging builds the final stage of this same file with buildah, handing it the binary
# it built with the same cargo command through `--build-context build=DIR` (a build context named
# like a stage replaces that stage), because no base image can be pulled in CI.

ARG RUST_VERSION=1.95.0

FROM docker.io/library/rust:${RUST_VERSION}-slim AS build
WORKDIR /src
# musl-gcc compiles ring's C and assembly (TLS) for the musl target. Not pinned to a Debian
# revision: the stage follows its pinned base image, and nothing of it ships but the static binary.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
COPY . .
# The musl target links its own C runtime: the result is a static-pie executable with no
# dependency on the base image's libc.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target x86_64-unknown-linux-musl --bin secret-reloader \
    && mkdir /out \
    && cp target/x86_64-unknown-linux-musl/release/secret-reloader /out/secret-reloader

FROM scratch AS runtime
# VERSION must follow Cargo.toml (CI checks it); REVISION and SOURCE are given at build time:
#   docker build --build-arg REVISION=$(git rev-parse HEAD) --build-arg SOURCE=<repository URL> .
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=""
LABEL org.opencontainers.image.title="secret-reloader" \
      org.opencontainers.image.description="Kubernetes sidecar that makes long-lived processes apply rotated secrets: watch, check, reload, verify, report." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/secret-reloader /usr/local/bin/secret-reloader
USER 65532:65532
EXPOSE 9533
# No HEALTHCHECK: Kubernetes ignores it and probes /healthz, /readyz and /startupz (deploy/examples),
# and the image has no shell or HTTP client to run one with.
# checkov:skip=CKV_DOCKER_2:the kubelet's probes in deploy/examples check the daemon, not HEALTHCHECK
ENTRYPOINT ["/usr/local/bin/secret-reloader"]
