#!/usr/bin/env bash
# The whole test suite, as README.md gives it and .ci/run runs it. Needs root (network
# namespaces, BGP on port 179, kernel routes).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/install-deps.sh

step() { printf '\n==> %s\n' "$*"; }

# A fresh run is a full build: incremental state would only take disk (gigabytes) and time.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# The build, the fuzz targets and the bench build share one target directory so that the
# dependencies they have in common are built once and stored once.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
mkdir -p "$CARGO_TARGET_DIR"
# A full disk shows up as a linker killed by SIGBUS, far from its cause: say how much room there is.
free_kib=$(df -Pk "$CARGO_TARGET_DIR" | awk 'NR == 2 { print $4 }')
printf 'free disk for %s: %s MiB (a fresh run needs about 5 GiB, and 4 GiB more the first time the Kubernetes binaries are built)\n' "$CARGO_TARGET_DIR" "$((free_kib / 1024))"
if [ "$free_kib" -lt $((5 * 1024 * 1024)) ]; then
	printf 'warning: less than 5 GiB free; the build may fail with the linker killed by SIGBUS\n' >&2
fi

step "Kubernetes control plane for the datastore tests (built once per machine, cached)"
bash tests/k8s/control-plane.sh build

step "format"
cargo fmt --all -- --check

step "build"
cargo build --workspace --all-targets --locked

step "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "unit and component tests"
cargo test --workspace --locked --exclude tabby-tests

step "end-to-end tests (network namespaces, BIRD, GoBGP)"
# They use the tabby binary built above; they mostly wait on BGP timers, so they run with more
# threads than cores.
cargo test -p tabby-tests --locked -- --test-threads "${TABBY_TEST_THREADS:-8}"

step "fuzz targets build"
# The fuzz crate is its own workspace; building it on stable checks the targets compile
# (running them needs cargo-fuzz on nightly, see docs/fuzzing.md).
cargo build --manifest-path fuzz/Cargo.toml --locked --bins

step "benchmarks build"
cargo bench -p tabby-bgp --no-run --locked
