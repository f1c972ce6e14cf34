#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time on a copy of its corpus
# (fuzz/corpus/TARGET, kept in the repository). A crash fails the script and leaves the input
# under fuzz/artifacts/TARGET/. cargo fuzz passes -Z flags to rustc, so on a stable toolchain it
# runs with RUSTC_BOOTSTRAP=1. Prints the build time and, per target, libFuzzer's executions,
# executions per second, new corpus units and peak RSS.
#
#   FUZZ_SECONDS  seconds per target (default 30)
#   FUZZ_TARGETS  space-separated subset of targets (default: all, from `cargo fuzz list`)
#   FUZZ_FLAGS    cargo fuzz build/run flags (default "-O"; e.g. "-O --sanitizer none" builds
#                 faster but finds only panics and aborts, not memory errors in unsafe code)
#
# `scripts/fuzz.sh build` only installs cargo-fuzz (if missing) and builds the targets: .ci/run
# runs that in the background at nice 19 while the test suite runs, then fuzzes.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${FUZZ_SECONDS:-30}"
read -r -a flags <<<"${FUZZ_FLAGS:--O}"
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
t0=$(date +%s)
if [ -n "${FUZZ_TARGETS:-}" ]; then
  for t in $targets; do cargo fuzz build "${flags[@]}" "$t"; done
else
  cargo fuzz build "${flags[@]}"
fi
echo "fuzz: build ${flags[*]} took $(($(date +%s) - t0)) s"
[ "${1:-}" = build ] && exit 0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
summary=""
for t in $targets; do
  rm -rf "$work/new" && mkdir "$work/new"
  echo "fuzz: $t for ${secs}s"
  if ! cargo fuzz run "${flags[@]}" "$t" "$work/new" "corpus/$t" -- -max_total_time="$secs" \
    -print_final_stats=1 >"$work/log" 2>&1; then
    tail -n 60 "$work/log" >&2
    echo "fuzz: target $t failed; the crashing input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  stat() { sed -n "s/^stat::$1: *//p" "$work/log" | tail -n 1; }
  line=$(printf '%-15s %12s %10s %8s %8s' "$t" "$(stat number_of_executed_units)" \
    "$(stat average_exec_per_sec)" "$(stat new_units_added)" "$(stat peak_rss_mb)")
  echo "$line"
  summary+="$line"$'\n'
done
printf '%-15s %12s %10s %8s %8s\n' target executions exec/s new_units rss_mb
printf '%s' "$summary"
