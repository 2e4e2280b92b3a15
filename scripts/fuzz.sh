#!/usr/bin/env bash
# Runs every cargo-fuzz target under fuzz/ for a bounded time (issue 6).
#
#   scripts/fuzz.sh [SECONDS]        # SECONDS per target, default 60
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Each target starts
# from its committed seeds in fuzz/corpus/<target>/; inputs it discovers go to a scratch
# corpus under the target directory, so the committed corpus stays small. Crash inputs land in
# fuzz/artifacts/<target>/ (reproduce with `cargo +nightly fuzz run <target> <file>`).
# Exits non-zero if any target crashes, and prints libFuzzer's last status line for each.
#
# Environment:
#   CARGO_TARGET_DIR   where to build (default: fuzz/target)
#   FUZZ_TARGETS       space-separated subset of targets (default: all)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECONDS_EACH=${1:-60}
case $SECONDS_EACH in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/fuzz/target}
cd "$ROOT"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz (and rustup toolchain install nightly)" >&2
    exit 2
fi

TARGETS=${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}
cargo +nightly fuzz build

SCRATCH=$CARGO_TARGET_DIR/fuzz-corpus
LOGS=$CARGO_TARGET_DIR/fuzz-logs
mkdir -p "$LOGS"
failed=()
for t in $TARGETS; do
    mkdir -p "$SCRATCH/$t" "fuzz/corpus/$t"
    echo "== $t: ${SECONDS_EACH}s" >&2
    status=0
    # The first corpus directory receives new inputs; the seeds are read only.
    cargo +nightly fuzz run "$t" "$SCRATCH/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" -print_final_stats=1 \
        >"$LOGS/$t.log" 2>&1 || status=$?
    grep -E '^#[0-9]+' "$LOGS/$t.log" | tail -n 1 >&2 || true
    if [ "$status" -ne 0 ]; then
        echo "!! $t failed (exit $status); log: $LOGS/$t.log" >&2
        grep -E 'panicked|SUMMARY|Test unit written' "$LOGS/$t.log" >&2 || tail -n 30 "$LOGS/$t.log" >&2
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -ne 0 ]; then
    echo "crashed: ${failed[*]}" >&2
    exit 1
fi
echo "no crashes in: $TARGETS" >&2
