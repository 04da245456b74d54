#!/usr/bin/env bash
# Parse benchmark: our loader and extractors on generated 1,000- and 10,000-server trees, then
# crossplane (installed into a venv under target/) on the very same trees, and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."

trees="$PWD/target/bench-trees"
venv="$PWD/target/crossplane-venv"
rm -rf "$trees"

out=$(SAFE_RELOAD_BENCH_DIR="$trees" cargo bench --bench parse 2>/dev/null)
echo "$out"

if [ ! -x "$venv/bin/crossplane" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet crossplane
fi

for n in 1000 10000; do
    ours=$(echo "$out" | sed -n "s/^servers=$n .*median_ms=\([0-9.]*\).*/\1/p")
    best=""
    for _ in 1 2 3; do
        start=$(date +%s%N)
        "$venv/bin/crossplane" parse "$trees/$n/nginx.conf" -o /dev/null
        ms=$(( ($(date +%s%N) - start) / 1000000 ))
        if [ -z "$best" ] || [ "$ms" -lt "$best" ]; then best=$ms; fi
    done
    ratio=$(awk -v c="$best" -v o="$ours" 'BEGIN { printf "%.1f", c / o }')
    echo "servers=$n crossplane_best_ms=$best safe_reload_median_ms=$ours ratio=${ratio}x"
done
