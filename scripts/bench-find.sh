#!/usr/bin/env bash
# `find` and `diff` of coffer against restic's on the same history (issue 17): a tree of real
# small files (a copy of /usr/share/doc, or FIND_SOURCE), backed up SNAPSHOTS times by both
# tools with `--time` one day apart, about 0.5 % of the files changed before each night. Then,
# each timed (median of FIND_RUNS, wall seconds):
#   find, name pattern, across every snapshot          coffer find '*.md'  / restic find '*.md'
#   find, same again (coffer's path index is warm)
#   diff of the first and the last snapshot            coffer diff A B       / restic diff A B
# coffer's first `find` includes building its path index for every snapshot; the second is the
# everyday cost. Prints a markdown table; raw times in $FIND_DIR/times.tsv.
#
# Variables: SNAPSHOTS (default 30; the issue's figure is 365), FIND_SOURCE (default
# /usr/share/doc; several directories separated by `:`), FIND_PATTERN (default '*.md'), FIND_DIR (default
# /var/tmp/coffer-bench-find: on disk), FIND_RUNS (3),
# COFFER_BIN (default target/release/coffer, built unless BENCH_SKIP_BUILD=1), RESTIC (`none`:
# coffer alone, for scales where restic's backups would take hours).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SNAPSHOTS=${SNAPSHOTS:-30}
FIND_SOURCE=${FIND_SOURCE:-/usr/share/doc}
W=${FIND_DIR:-/var/tmp/coffer-bench-find}
FIND_RUNS=${FIND_RUNS:-3}
COFFER=${COFFER_BIN:-$ROOT/target/release/coffer}
RESTIC=${RESTIC:-restic}
PATTERN=${FIND_PATTERN:-*.md}

log() { printf '[bench-find %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
[[ $SNAPSHOTS =~ ^[1-9][0-9]*$ ]] || die "SNAPSHOTS must be a positive integer"
IFS=: read -ra SOURCE_DIRS <<<"$FIND_SOURCE"
for d in "${SOURCE_DIRS[@]}"; do [[ -d $d ]] || die "no source directory $d"; done

if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
  log "building coffer (release)"
  (cd "$ROOT" && cargo build --release --quiet)
fi
[[ -x $COFFER ]] || die "no coffer binary at $COFFER"
if [[ $RESTIC == none ]]; then
  WITH_RESTIC=0
elif ! command -v "$RESTIC" >/dev/null; then
  log "installing restic from the Debian packages"
  apt-get install -y restic >/dev/null ||
    { apt-get update >/dev/null && apt-get install -y restic >/dev/null; } ||
    die "could not install restic"
fi
WITH_RESTIC=${WITH_RESTIC:-1}
[[ $WITH_RESTIC == 0 ]] || RESTIC=$(command -v "$RESTIC")

rm -rf "$W"
mkdir -p "$W"
export COFFER_PASSWORD=bench RESTIC_PASSWORD=bench
CREPO=(--repo "$W/coffer" --cache-dir "$W/coffer-cache")
RREPO=(-r "$W/restic" --cache-dir "$W/restic-cache")
DATA=$W/data/doc
mkdir -p "$DATA"
for d in "${SOURCE_DIRS[@]}"; do cp -a "$d" "$DATA/$(basename "$d")"; done
files=$(find "$DATA" -type f | wc -l)
log "corpus: $files files from $FIND_SOURCE; $SNAPSHOTS snapshots"

"$COFFER" "${CREPO[@]}" init >/dev/null
[[ $WITH_RESTIC == 0 ]] || "$RESTIC" "${RREPO[@]}" init >/dev/null
mapfile -t all < <(find "$DATA" -type f | sort)
change=$((files / 200 + 1))
for ((n = 0; n < SNAPSHOTS; n++)); do
  # Night n: about 0.5 % of the files appended to (the same files every run of the script).
  for ((k = 0; k < change; k++)); do
    f=${all[$(((n * 7919 + k * 104729) % files))]}
    printf 'night %d\n' "$n" >>"$f"
  done
  t=$(date -u -d "2025-01-01 03:00 UTC + $n days" +%Y-%m-%dT%H:%M:%SZ)
  "$COFFER" "${CREPO[@]}" backup --quiet --time "$t" "$DATA" >/dev/null
  if [[ $WITH_RESTIC == 1 ]]; then
    "$RESTIC" "${RREPO[@]}" backup --quiet --time "$(date -u -d "$t" '+%Y-%m-%d %H:%M:%S')" \
      "$DATA" >/dev/null
  fi
  ((n % 10 == 9)) && log "$((n + 1)) snapshots"
done

first_c=$("$COFFER" "${CREPO[@]}" snapshots --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
if [[ $WITH_RESTIC == 1 ]]; then
first_r=$("$RESTIC" "${RREPO[@]}" snapshots --json | python3 -c 'import json,sys; print(sorted(json.load(sys.stdin), key=lambda s: s["time"])[0]["id"])')
# restic 0.14's diff takes ids only, not `latest`.
last_r=$("$RESTIC" "${RREPO[@]}" snapshots --json | python3 -c 'import json,sys; print(sorted(json.load(sys.stdin), key=lambda s: s["time"])[-1]["id"])')
fi

timed() { # LABEL TOOL CMD...: append wall seconds to times.tsv
  local label=$1 tool=$2
  shift 2
  local start end
  start=$(date +%s.%N)
  "$@" >/dev/null 2>&1 || die "$label ($tool) failed: $*"
  end=$(date +%s.%N)
  printf "%s\t%s\t%s\n" "$label" "$tool" "$(python3 -c "print($end - $start)")" >>"$W/times.tsv"
}

: >"$W/times.tsv"
timed "find, first (coffer builds its path index)" coffer "$COFFER" "${CREPO[@]}" find --json "$PATTERN"
for ((r = 0; r < FIND_RUNS; r++)); do
  timed "find '$PATTERN' across all snapshots" coffer "$COFFER" "${CREPO[@]}" find --json "$PATTERN"
  [[ $WITH_RESTIC == 0 ]] ||
    timed "find '$PATTERN' across all snapshots" restic "$RESTIC" "${RREPO[@]}" find --json "$PATTERN"
  timed "diff first latest" coffer "$COFFER" "${CREPO[@]}" diff "$first_c" latest
  [[ $WITH_RESTIC == 0 ]] ||
    timed "diff first latest" restic "$RESTIC" "${RREPO[@]}" diff "$first_r" "$last_r"
done

python3 - "$W/times.tsv" "$files" "$SNAPSHOTS" <<'EOF'
import collections, statistics, sys
rows = collections.defaultdict(lambda: collections.defaultdict(list))
for line in open(sys.argv[1]):
    label, tool, secs = line.rstrip("\n").split("\t")
    rows[label][tool].append(float(secs))
print(f"\n{sys.argv[2]} files, {sys.argv[3]} snapshots (median wall seconds)\n")
print("| step | coffer | restic | coffer / restic |")
print("|---|---|---|---|")
for label, tools in rows.items():
    c = statistics.median(tools["coffer"]) if tools["coffer"] else None
    r = statistics.median(tools["restic"]) if tools["restic"] else None
    ratio = f"{c / r:.3f}" if c and r else ""
    fmt = lambda v: "" if v is None else f"{v:.3f}"
    print(f"| {label} | {fmt(c)} | {fmt(r)} | {ratio} |")
EOF
