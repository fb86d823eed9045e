# syntax=docker/dockerfile:1
# lockstep's container image: the `lockstep` binary on a runtime with glibc and CA certificates and nothing
# else, running as uid/gid 65532.
#
#   docker build -t lockstep .                       # builds the binary from source (stage `builder`)
#
# Both base images are build arguments, so the image can be built where public registries are unreachable
# (scripts/build-image.sh builds it fully offline on Debian). With BINARY_FROM=prebuilt the binary comes from
# dist/linux-<arch>/lockstep in the build context instead of the builder stage (the release workflow builds
# the binaries natively per architecture, then assembles the multi-arch image from them). Either way the
# image users run is the `runtime` stage below, unchanged.
ARG BUILDER_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
ARG BINARY_FROM=builder

FROM ${BUILDER_IMAGE} AS builder
WORKDIR /src
COPY . .
# Bookworm's glibc (2.36) matches the distroless cc-debian12 runtime.
RUN cargo build --release --locked --bin lockstep \
    && install -D -m 0755 target/release/lockstep /out/lockstep

FROM scratch AS prebuilt
ARG TARGETARCH
COPY dist/linux-${TARGETARCH}/lockstep /out/lockstep

# The stage the binary comes from: `builder` or `prebuilt`.
FROM ${BINARY_FROM} AS binary

FROM ${RUNTIME_IMAGE} AS runtime
ARG VERSION=dev
LABEL org.opencontainers.image.title="lockstep" \
      org.opencontainers.image.description="Keeps GitOps deployments in lockstep with Azure DevOps pipelines" \
      org.opencontainers.image.source="https://github.com/lockstep-dev/lockstep" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=binary --chmod=0755 /out/lockstep /usr/local/bin/lockstep
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/lockstep"]
