#!/usr/bin/env bash
# Runs kapsel's whole test suite. Root-only tests (runtime, agent, networking) need root;
# with CI=true they fail instead of skipping when they cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=default
[ "${CI:-}" = "true" ] && profile=ci
# The end-to-end tests run the workspace binaries; build them once up front so no test spends
# its time budget compiling.
cargo build --workspace --bins
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --profile "$profile" "$@"
else
  echo "cargo-nextest not found; falling back to cargo test" >&2
  cargo test --workspace "$@"
fi
