#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time (FUZZ_SECONDS, default 30) on a copy
# of its corpus (fuzz/corpus/TARGET, kept in the repository). A crash fails the script and
# leaves the input under fuzz/artifacts/TARGET/. cargo fuzz passes -Z flags to rustc, so on a
# stable toolchain it runs with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${FUZZ_SECONDS:-30}"
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
targets=$(cargo fuzz list)
cargo fuzz build -O
for t in $targets; do
  work=$(mktemp -d)
  mkdir "$work/new"
  trap 'rm -rf "$work"' EXIT
  echo "fuzz: $t for ${secs}s"
  if ! cargo fuzz run -O "$t" "$work/new" "corpus/$t" -- -max_total_time="$secs" \
    -print_final_stats=1 >"$work/log" 2>&1; then
    tail -n 60 "$work/log" >&2
    echo "fuzz: target $t failed; the crashing input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  grep -E "^stat::(number_of_executed_units|new_units_added)" "$work/log" || true
  rm -rf "$work"
done
