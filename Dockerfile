# sockerr's container image: one static (musl) binary on an empty base, for the platform
# the build asks for.
#
#   docker build -t sockerr:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/sockerr:0.1.0 --push .
#
# Without a registry (or a base image to pull), `cargo xtask image` builds the same image for
# amd64 and arm64 with buildah and writes it as an OCI archive; `cargo xtask test` builds that
# one and runs it under podman with the DaemonSet's security context (stage `image`).
#
# The build stage runs on the build machine's own platform and cross-compiles for the
# target's (TARGETARCH, set by BuildKit): `cargo xtask build --static --arch` installs what
# the build needs (nightly rust-src and bpf-linker for the eBPF object, the musl target,
# musl-gcc or Debian's cross gcc) exactly as on a developer's machine, and prints the
# binary's path.

FROM --platform=$BUILDPLATFORM rust:1.95-bookworm AS build
ARG TARGETARCH
WORKDIR /src
COPY . .
RUN cp "$(cargo xtask build --static --arch "$TARGETARCH")" /sockerr

# Nothing but the binary: no shell, no libc, no CA bundle (the in-cluster client trusts
# the service account's CA, mounted into the pod).
FROM scratch
COPY --from=build /sockerr /sockerr
ENTRYPOINT ["/sockerr"]
CMD ["daemon", "--host-proc", "/host/proc", "--kubernetes", "--listen", "0.0.0.0:9966"]
