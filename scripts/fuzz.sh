#!/bin/sh
# Run each fuzz target for a bounded time and keep what crashes as a regression input.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60 s, every target)
#
# cargo-fuzz needs nightly compiler features; on a stable toolchain RUSTC_BOOTSTRAP=1 unlocks
# them. Crashing inputs go to tests/fuzz-corpus/TARGET/, which tests/fuzz_regressions.rs
# replays in the normal test run: fix the bug, keep the file.
set -eu

cd "$(dirname "$0")/.."
secs=${1:-60}
[ $# -gt 0 ] && shift
targets=${*:-"conf_tree conf_load errorlog"}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
status=0
for t in $targets; do
    corpus="fuzz/corpus/$t"
    mkdir -p "$corpus" "tests/fuzz-corpus/$t"
    # Start from the kept inputs as well as what earlier runs learnt.
    cp tests/fuzz-corpus/"$t"/* "$corpus"/ 2>/dev/null || true
    echo "fuzzing $t for ${secs}s" >&2
    if ! cargo fuzz run "$t" "$corpus" -- -max_total_time="$secs" -rss_limit_mb=1024 \
        -timeout=10 -max_len=65536; then
        status=1
    fi
    for crash in fuzz/artifacts/"$t"/crash-* fuzz/artifacts/"$t"/oom-* fuzz/artifacts/"$t"/timeout-*; do
        [ -f "$crash" ] || continue
        cp "$crash" "tests/fuzz-corpus/$t/"
        echo "kept $crash as tests/fuzz-corpus/$t/$(basename "$crash")" >&2
    done
done
exit $status
