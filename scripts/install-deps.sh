#!/usr/bin/env bash
# Installs what building and testing tabby needs on a Debian or Ubuntu machine, as root.
# Idempotent: it only calls apt-get when a command is missing.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have ip || need+=(iproute2)
have bird || need+=(bird2)
have gobgpd || need+=(gobgpd)
have nft || need+=(nftables)
have iptables || need+=(iptables)
have ipset || need+=(ipset)
have ping || need+=(iputils-ping)
have sysctl || need+=(procps)
have curl || need+=(curl)
have tcpdump || need+=(tcpdump)
have iperf3 || need+=(iperf3)
have openssl || need+=(openssl)
have sha1sum || need+=(coreutils)
have cc || need+=(build-essential)
have c++ || need+=(g++)
have pkg-config || need+=(pkg-config)

if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Debian's bird2 package may start a system BIRD; tabby's tests run their own BIRDs in
# network namespaces and never use it, so leave it alone.

if ! have cargo; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    echo "install-deps: add \$HOME/.cargo/bin to PATH" >&2
  else
    echo "install-deps: no Rust toolchain; install one with rustup (stable, 1.80 or newer)" >&2
  fi
  exit 1
fi
