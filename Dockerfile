# syntax=docker/dockerfile:1
# One image for every tabby process (shared/DESIGN.md §1): `tabby node`, `tabby route-reflector`,
# `tabby status`. Build from the repository root:
#
#   docker build -t tabby:latest .
#
# Stage 1 builds the release binary with the Rust toolchain; stage 2 is a slim Debian with the
# tools tabby drives or that an operator wants next to it (ip, nft, iptables-restore, ipset).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
# The registry and target caches only speed up rebuilds (BuildKit); the binary is copied out of
# the cached target directory, which does not outlive this step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p tabby \
    && install -D -m 0755 target/release/tabby /out/tabby

FROM debian:${DEBIAN_RELEASE}-slim
# iproute2: `ip` for operators (tabby itself programs routes over netlink); nftables: `nft -f -`
# (the default policy backend); iptables: `iptables-restore --noflush` (--dataplane iptables;
# Debian's default alternative is the nft variant, see docs/deploy.md); ipset: IP sets for the
# iptables backend. No TLS roots: in a pod, the API server's CA comes with the ServiceAccount.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        iproute2 nftables iptables ipset \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/tabby /usr/local/bin/tabby
# BGP, and the HTTP endpoints (/livez, /readyz, /metrics, /status; loopback by default).
EXPOSE 179/tcp 9099/tcp
ENTRYPOINT ["/usr/local/bin/tabby"]
CMD ["--help"]
