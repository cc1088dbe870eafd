#!/usr/bin/env bash
# Runs every test fjord has. Used by .ci/run and by developers.
set -euo pipefail
cd "$(dirname "$0")/.."

# RocksDB's C++ takes most of a clean build: keep build output outside the
# clone so repeated runs on one machine reuse it. A fresh machine builds it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fjord-target}"
export CARGO_TERM_COLOR=never

scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
# One profile only: clippy and the tests both use the `test` profile, so
# RocksDB is compiled once (the `dev` and `test` profiles each build it).
echo "== cargo clippy"
cargo clippy --all-targets --profile test --quiet -- -D warnings
echo "== cargo test"
# tests/kafka_fuzz.rs mutates requests for this long (seed: FJORD_FUZZ_SEED).
FJORD_FUZZ_SECS="${FJORD_FUZZ_SECS:-15}" cargo test --quiet
# `cargo test` built the binary the process tests ran; the clients use it too.
echo "== real clients (pytest)"
FJORD_BIN="$CARGO_TARGET_DIR/debug/fjord" .venv/bin/python -m pytest -q -n 2 --dist loadfile tests/clients
