#!/usr/bin/env bash
# Reload benchmark: the whole safe pipeline (`safe-reload -y`) against the unsafe manual
# sequence (`nginx -t && nginx -s reload`, timed until new workers serve and old ones stop
# accepting), alternated in one run on generated 100-, 1,000- and 10,000-server trees with real
# nginx and real backends on loopback, for a change to one small file and (`ratio_one_server`)
# a change to one server; then our parse time against crossplane's on the same
# trees, both in-process and as a whole `safe-reload targets --json` process. Figures and how to
# read them: BENCHMARKS.md.
#
#   scripts/bench.sh                          all sizes (a few minutes; 10,000 dominates)
#   BENCH_SIZES=100,1000 scripts/bench.sh     choose sizes
#   BENCH_ITERS=3 scripts/bench.sh            iterations per size (default 7, 5, 2)
#   BENCH_WORKERS=2 scripts/bench.sh          worker_processes (default 1)
#   BENCH_CLIENT=0 scripts/bench.sh           skip the client-visible failures (a client loop
#                                             during a bad change of each class)
#   BENCH_SAFE_FLAGS=--no-shadow              extra flags for the timed safe runs
#
# Needs: cargo, /usr/sbin/nginx, python3 with venv (crossplane goes into target/crossplane-venv).
set -euo pipefail
cd "$(dirname "$0")/.."

export BENCH_DIR="${BENCH_DIR:-$PWD/target/bench-reload}"
venv="$PWD/target/crossplane-venv"
[[ -x /usr/sbin/nginx ]] || { echo "bench: needs /usr/sbin/nginx" >&2; exit 2; }

echo "machine: nproc=$(nproc) mem=$(free -h | awk '/^Mem:/ {print $2}') kernel=$(uname -r) $(/usr/sbin/nginx -v 2>&1)"

echo "start: $(date -u '+%F %T UTC') commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo +dirty) load:$(uptime | sed 's/.*load average//')"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo bench --quiet --bench reload 2>/dev/null | tee "$out"
# The binary the bench ran (cargo bench builds it in the release profile).
bin="$PWD/target/release/safe-reload"

if [[ ! -x "$venv/bin/crossplane" ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet crossplane
fi

# Wall time of one command in ms, microsecond precision (its process start included).
wall_ms() {
  local start end
  start=$(date +%s%N)
  "$@" >/dev/null
  end=$(date +%s%N)
  awk -v d="$((end - start))" 'BEGIN { printf "%.1f", d / 1e6 }'
}

# crossplane parses the very trees the run used; best of 3 (its start-up included, as a user
# would see it), against our median of 5 in-process and, as a user sees ours, the median of 5
# whole `safe-reload targets --json` processes (start-up, parse, extraction, the JSON written).
while read -r n ours; do
  conf="$BENCH_DIR/$n/nginx.conf"
  [[ -f "$conf" ]] || continue
  best=""
  for _ in 1 2 3; do
    ms=$(wall_ms "$venv/bin/crossplane" parse "$conf" -o /dev/null)
    if [[ -z "$best" ]] || awk -v a="$ms" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$ms; fi
  done
  runs=()
  for _ in 1 2 3 4 5; do
    runs+=("$(wall_ms "$bin" targets --json -c "$conf" -p "$BENCH_DIR/$n/")")
  done
  whole=$(printf '%s\n' "${runs[@]}" | sort -g | sed -n 3p)
  ratio=$(awk -v c="$best" -v o="$ours" 'BEGIN { printf "%.0f", c / o }')
  whole_ratio=$(awk -v c="$best" -v o="$whole" 'BEGIN { printf "%.1f", c / o }')
  echo "servers=$n parse: safe_reload_ms=$ours crossplane_ms=$best crossplane/safe_reload=${ratio}x" \
    "targets_json_process_ms=$whole (runs ${runs[*]}) crossplane/targets_json_process=${whole_ratio}x"
done < <(sed -n 's/^servers=\([0-9]*\) upstreams=.* parse_ms=\([0-9.]*\) .*/\1 \2/p' "$out")

echo
echo "end: $(date -u '+%F %T UTC') load:$(uptime | sed 's/.*load average//')"
echo "targets: ratio (and paired_ratio, the median of per-iteration ratios) <= 1.0 at 1000, <= 0.7 at 10000,"
echo "         ratio_one_server (a change to one server, the same alternation) reported beside them;"
echo "         under 1.0 at 100 (the shadow running unless BENCH_SAFE_FLAGS=--no-shadow);"
echo "         parse >= 20x crossplane, targets --json as a whole process >= 20x at 1000;"
echo "         peak rss < peak_limit_kb (plain, --json, wide-change and rollback runs);"
echo "         wide change: within_window=true; client-visible: non_200=0 for the classes caught"
echo "         before the reload, the production-only window <= one master reload + 300 ms;"
echo "         timeline: diff, impact, baseline and shadow with out=0.0 (alongside nginx -t)"
