# secret-reloader container image: one static binary on an empty base.
#
#   docker build -t secret-reloader:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/secret-reloader:0.1.0 --push .
#
# The image holds the binary, /usr/local/bin/secret-reloader (a static musl binary for x86_64 or
# aarch64, about 3 MiB; on the default PATH, so `kubectl exec POD -c secret-reloader --
# secret-reloader doctor` works), and its SBOM, /usr/share/doc/secret-reloader/sbom.cdx.json
# (CycloneDX JSON, from the dependency list the binary carries; the label secret-reloader.sbom
# names it). It runs as 65532:65532, a numeric user that needs no /etc/passwd, and serves /metrics,
# /healthz, /readyz and /status on port 9533. There is no shell, no package manager and no CA
# bundle: https:// reload and verify calls name their CA with --tls-ca-file.
#
# The build stage needs BuildKit (the default builder since Docker 23) for its cache mounts.
# scripts/ci-packaging builds the final stage of this same file with buildah, handing it the binary
# it built with the same cargo command through `--build-context build=DIR` (a build context named
# like a stage replaces that stage), because no base image can be pulled in CI; scripts/ci-multiarch
# does the same for linux/amd64 and linux/arm64 into one manifest list.

ARG RUST_VERSION=1.95.0

# The stage runs on the builder's own platform and cross-compiles for the image's: TARGETARCH
# (amd64 or arm64, from `--platform linux/amd64,linux/arm64`) picks the Rust musl target. ring's C
# and assembly (TLS) build with musl-gcc for x86_64 and with Debian's aarch64 cross gcc, which
# also links, for aarch64. cargo-auditable embeds the dependency list in the binary (section
# .dep-v0) and auditable2cdx turns that list into the image's SBOM.
FROM --platform=$BUILDPLATFORM docker.io/library/rust:${RUST_VERSION}-slim AS build
WORKDIR /src
# Not pinned to a Debian revision: the stage follows its pinned base image, and nothing of it ships
# but the static binary and its SBOM.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools gcc-aarch64-linux-gnu libc6-dev-arm64-cross \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl aarch64-unknown-linux-musl \
    && cargo install --locked cargo-auditable@0.7.7 auditable2cdx@0.1.0
ENV CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc \
    CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc
COPY . .
# Declared here, not above: the layers before it are the same for every target platform.
ARG TARGETARCH
# The musl target links its own C runtime: the result is a static executable with no dependency
# on the base image's libc.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    case "$TARGETARCH" in \
      amd64) RUST_TARGET=x86_64-unknown-linux-musl ;; \
      arm64) RUST_TARGET=aarch64-unknown-linux-musl ;; \
      *) echo "no Rust target for TARGETARCH=$TARGETARCH" >&2; exit 1 ;; \
    esac \
    && cargo auditable build --release --locked --target "$RUST_TARGET" --bin secret-reloader --bin secret-reloader-inject \
    && mkdir /out \
    && cp "target/$RUST_TARGET/release/secret-reloader" /out/secret-reloader \
    && cp "target/$RUST_TARGET/release/secret-reloader-inject" /out/secret-reloader-inject \
    && auditable2cdx /out/secret-reloader >/out/sbom.cdx.json

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
      org.opencontainers.image.licenses="Apache-2.0" \
      secret-reloader.sbom="/usr/share/doc/secret-reloader/sbom.cdx.json"
COPY --from=build /out/secret-reloader /usr/local/bin/secret-reloader
# The injector and admission webhook (the Helm chart's webhook runs it): a binary of its own, so
# that the sidecar's carries no YAML reader and no HTTPS server. The SBOM below covers both: cargo
# auditable records the package's whole dependency tree in each binary.
COPY --from=build /out/secret-reloader-inject /usr/local/bin/secret-reloader-inject
COPY --from=build /out/sbom.cdx.json /usr/share/doc/secret-reloader/sbom.cdx.json
USER 65532:65532
EXPOSE 9533
# No HEALTHCHECK: Kubernetes ignores it and probes /healthz, /readyz and /startupz (deploy/examples),
# and the image has no shell or HTTP client to run one with.
# checkov:skip=CKV_DOCKER_2:the kubelet's probes in deploy/examples check the daemon, not HEALTHCHECK
ENTRYPOINT ["/usr/local/bin/secret-reloader"]
