# sockerr's container image: one static (musl) binary on an empty base.
#
#   docker build -t sockerr:0.1.0 .
#
# The build stage uses the project's own `cargo xtask build --static`, which installs what
# the build needs (nightly rust-src and bpf-linker for the eBPF object, the musl target,
# musl-gcc) exactly as on a developer's machine. `cargo xtask test` proves the result runs
# in an empty root (stage `static-binary`), since no container engine runs in the suite.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo xtask build --static \
 && cp target/x86_64-unknown-linux-musl/release/sockerr /sockerr

# Nothing but the binary: no shell, no libc, no CA bundle (the in-cluster client trusts
# the service account's CA, mounted into the pod).
FROM scratch
COPY --from=build /sockerr /sockerr
ENTRYPOINT ["/sockerr"]
CMD ["daemon", "--host-proc", "/host/proc", "--kubernetes", "--listen", "0.0.0.0:9966"]
