#!/usr/bin/env bash
# Issue 19's concurrency benchmark: four hosts back up into one repository while a prune runs,
# against the same work done one after the other, and against the exclusive prune (which makes
# the backups wait). Every variant starts from a copy of the same repository state:
#
#   night 1: each host backs up its source (shared files every host has, and its own), then
#            host h0's source changes a lot and h0 backs up again, and its first snapshot is
#            forgotten: the prune has real work (dead packs to condemn and delete);
#   measured: each host backs up night 2 (a few files changed) and one prune runs.
#
#   sequential   backups one after the other, then `prune --exclusive`
#   beside       four backups and `prune` (two-phase) started at once
#   exclusive    four backups and `prune --exclusive` started at once (prune first)
#
# Wall time is from the first start to the last exit. Medians of BENCH_RUNS runs.
#
# Environment: COFFER_BIN (default target/release/coffer, built when missing),
# BENCH_DIR (default /var/tmp/coffer-bench-concurrent: a disk, not tmpfs),
# HOST_MB (own data per host, default 64), SHARED_MB (default 64), BENCH_RUNS (default 3).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${COFFER_BIN:-$ROOT/target/release/coffer}"
DIR="${BENCH_DIR:-/var/tmp/coffer-bench-concurrent}"
HOST_MB="${HOST_MB:-64}"
SHARED_MB="${SHARED_MB:-64}"
RUNS="${BENCH_RUNS:-3}"
HOSTS=4

if [ ! -x "$BIN" ]; then
  (cd "$ROOT" && cargo build --release --bin coffer)
fi
rm -rf "$DIR"
mkdir -p "$DIR"
export COFFER_PASSWORD=bench
fstype=$(stat -f -c %T "$DIR")

python3 - "$DIR" "$HOSTS" "$HOST_MB" "$SHARED_MB" <<'EOF'
import os, random, sys
d, hosts, host_mb, shared_mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def blob(seed, n):
    r = random.Random(seed)
    return r.randbytes(n)
for h in range(hosts):
    for night in (1, 2):
        base = f"{d}/src/h{h}-n{night}/ws"
        os.makedirs(f"{base}/shared", exist_ok=True)
        os.makedirs(f"{base}/own", exist_ok=True)
        for i in range(shared_mb // 4):
            with open(f"{base}/shared/{i}.bin", "wb") as f:
                f.write(blob(1000 + i, 4 << 20))
        for i in range(host_mb // 4):
            # Night 2 changes one own file in eight.
            seed = 10_000 * (h + 1) + i + (100 * night if i % 8 == 0 and night == 2 else 0)
            with open(f"{base}/own/{i}.bin", "wb") as f:
                f.write(blob(seed, 4 << 20))
        for i in range(500):
            with open(f"{base}/own/small-{i}.txt", "w") as f:
                f.write(f"host {h} night {night} file {i}\n" * (1 + i % 50))
# h0's churn: a night whose own files all differ (forgotten before the measure).
base = f"{d}/src/h0-churn/ws"
os.makedirs(f"{base}/own", exist_ok=True)
for i in range(host_mb // 4):
    with open(f"{base}/own/{i}.bin", "wb") as f:
        f.write(blob(777_000 + i, 4 << 20))
EOF

repo="$DIR/repo-base"
c() { COFFER_REPO="$1" COFFER_CACHE_DIR="$2" "$BIN" "${@:3}"; }
c "$repo" "$DIR/cache-setup" init >/dev/null
churn_id=$(c "$repo" "$DIR/cache-h0-base" backup --json --host h0 "$DIR/src/h0-churn/ws" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["snapshot_id"])')
for h in $(seq 0 $((HOSTS - 1))); do
  c "$repo" "$DIR/cache-h$h-base" backup --host "h$h" "$DIR/src/h$h-n1/ws" >/dev/null
done
c "$repo" "$DIR/cache-setup" forget "$churn_id" >/dev/null

now() { date +%s.%N; }

# One variant, from a fresh copy of the base repository and caches; prints the wall time.
run_variant() {
  local variant=$1 work="$DIR/work"
  rm -rf "$work"
  mkdir -p "$work"
  cp -a "$repo" "$work/repo"
  for h in $(seq 0 $((HOSTS - 1))); do cp -a "$DIR/cache-h$h-base" "$work/cache-h$h"; done
  sync
  local r="$work/repo" t0 t1 pids=()
  t0=$(now)
  case "$variant" in
    sequential)
      for h in $(seq 0 $((HOSTS - 1))); do
        c "$r" "$work/cache-h$h" backup --host "h$h" "$DIR/src/h$h-n2/ws" >/dev/null
      done
      c "$r" "$work/cache-p" prune --exclusive --max-unused 0 >/dev/null
      ;;
    beside | exclusive)
      local flag=()
      [ "$variant" = exclusive ] && flag=(--exclusive)
      c "$r" "$work/cache-p" prune "${flag[@]}" --max-unused 0 >"$work/prune.out" 2>&1 &
      pids+=($!)
      # The prune takes its lock first (it is what the backups meet).
      sleep 0.2
      for h in $(seq 0 $((HOSTS - 1))); do
        c "$r" "$work/cache-h$h" backup --host "h$h" "$DIR/src/h$h-n2/ws" >/dev/null 2>&1 &
        pids+=($!)
      done
      for p in "${pids[@]}"; do wait "$p"; done
      ;;
  esac
  t1=$(now)
  # Every variant must leave a sound repository.
  c "$r" "$work/cache-check" check >/dev/null
  python3 -c "print(f'{$t1 - $t0:.2f}')"
}

declare -A times
for run in $(seq 1 "$RUNS"); do
  for v in sequential beside exclusive; do
    times[$v]+="$(run_variant "$v") "
  done
done

median() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.2f}')" "$@"; }
echo
echo "bench-concurrent: $HOSTS hosts x (${SHARED_MB} MiB shared + ${HOST_MB} MiB own + 500 small files), $fstype at $DIR, $RUNS runs, load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| variant | wall s (median) | runs |"
echo "|---|---:|---|"
for v in sequential beside exclusive; do
  # shellcheck disable=SC2086
  echo "| $v | $(median ${times[$v]}) | ${times[$v]}|"
done
