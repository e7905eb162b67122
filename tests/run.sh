#!/bin/sh
# Builds the tabby binary, then runs the end-to-end tests (as root) against it.
# Cargo cannot build another package's binary for an integration test, so this does both.
# The tests mostly wait on BGP timers, so more threads than cores is fine.
# Usage: tests/run.sh [cargo test filter and args...]   e.g. tests/run.sh bird_ebgp
set -eu
cd "$(dirname "$0")/.."
cargo build -p tabby
exec cargo test -p tabby-tests "$@" -- --test-threads "${TABBY_TEST_THREADS:-8}"
