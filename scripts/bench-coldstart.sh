#!/usr/bin/env bash
# Many hosts, one bucket (issue 19): cold start of coffer and restic on a repository of
# HOSTS x NIGHTS snapshots on an S3 server on loopback. Documented in docs/performance.md,
# "S3 side by side (issue 19)".
#
#   scripts/bench-coldstart.sh                           # 10 hosts x 365 nights = 3,650 snapshots
#   COLD_HOSTS=10 COLD_NIGHTS=36 scripts/bench-coldstart.sh
#   S3_SERVER=moto COLD_TOOLS=coffer scripts/bench-coldstart.sh
#
# Build: every host has a small directory of its own (COLD_FILES text files of 1-8 KiB); each
# night a line is appended to 2 of its files and one new file of about 1 KiB is added, then the
# host backs up: `coffer backup --host host-H --time DATE` / `restic backup --host host-H
# --time DATE`, one cache directory per host (warm, as on a real host). Real backups, one
# snapshot each; coffer and restic each get their own copy of the directories (same content)
# and are built at the same time, in two processes.
#
# Then, for each tool, with an EMPTY cache directory for every run (COLD_RUNS, median):
#   snapshots   `coffer snapshots` / `restic snapshots`, fresh --cache-dir
#   backup      the first backup of host-1 on a machine without a cache (its directory is
#               unchanged since the last night, so the backup finds the parent and reads
#               nothing): `coffer backup --host host-1` / `restic backup --host host-1`,
#               fresh --cache-dir. Each run adds a snapshot (COLD_RUNS per phase, noted).
# measured before and after one `prune` (coffer: consolidates the index files; restic: rewrites
# the index), which is itself timed. The objects under index/ and snapshots/ are counted before
# and after the prune. Every measured command also gets the server's request count (s3s-fs's
# request log, moto's access log).
#
# Environment:
#   COLD_HOSTS, COLD_NIGHTS   default 10 and 365 (the issue's scale)
#   COLD_FILES       files per host directory at night 1; default 200
#   COLD_RUNS        measured runs per step, the median is reported; default 3
#   COLD_TOOLS       default "coffer restic"
#   S3_SERVER        fast (s3s-fs, default) | moto
#   COLD_DIR         work directory (wiped at the start); default /var/tmp/coffer-coldstart
#   COLD_KEEP        1: reuse COLD_DIR's repositories (server data kept) and only measure
#   BENCH_SKIP_BUILD 1: use the existing target/release/coffer
#   COFFER_BIN, RESTIC
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
S3_SERVER=${S3_SERVER:-fast}
HOSTS=${COLD_HOSTS:-10}
NIGHTS=${COLD_NIGHTS:-365}
FILES=${COLD_FILES:-200}
RUNS=${COLD_RUNS:-3}
TOOLS=${COLD_TOOLS:-coffer restic}
W=${COLD_DIR:-/var/tmp/coffer-coldstart}
KEEP=${COLD_KEEP:-0}
COFFER=${COFFER_BIN:-$ROOT/target/release/coffer}
RESTIC=${RESTIC:-restic}
SRV=$W/server
RAW=$W/raw.tsv
META=$W/meta.tsv
PASS=bench-passphrase

log() { printf '[coldstart %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

for v in HOSTS NIGHTS FILES RUNS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer"
done
case $S3_SERVER in fast | moto) ;; *) die "S3_SERVER must be fast or moto" ;; esac
[[ -x /usr/bin/time ]] || die "/usr/bin/time is needed (apt-get install -y time)"
if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
  log "building coffer (release)"
  (cd "$ROOT" && cargo build --release --quiet)
fi
[[ -x $COFFER ]] || die "no coffer binary at $COFFER"
if [[ " $TOOLS " == *" restic "* ]] && ! command -v "$RESTIC" >/dev/null; then
  apt-get install -y restic >/dev/null ||
    { apt-get update >/dev/null && apt-get install -y restic >/dev/null; } ||
    die "could not install restic"
fi
RESTIC=$(command -v "$RESTIC" || echo "$RESTIC")

if [[ $KEEP != 1 ]]; then rm -rf "$W"; fi
mkdir -p "$W/logs" "$W/cache" "$SRV"
: >>"$RAW"
: >>"$META"

# ---------------------------------------------------------------------------------------------
# Server and counters

SERVER_LOG=""
server_start() {
  local out
  if [[ $S3_SERVER == fast ]]; then
    if [[ $KEEP == 1 ]]; then
      out=$("$ROOT/scripts/s3-fast.sh" start --state-dir "$SRV" --keep-data)
    else
      out=$("$ROOT/scripts/s3-fast.sh" start --state-dir "$SRV")
    fi
  else
    [[ $KEEP != 1 ]] || die "COLD_KEEP=1 needs S3_SERVER=fast (moto keeps nothing)"
    out=$("$ROOT/scripts/s3-server.sh" start --state-dir "$SRV")
  fi
  eval "$out"
  if [[ $S3_SERVER == fast ]]; then
    SERVER_LOG=$COFFER_TEST_S3_LOG
  else
    SERVER_LOG=$SRV/moto-${COFFER_TEST_S3_ENDPOINT##*:}.log
  fi
}
server_stop() {
  if [[ $S3_SERVER == fast ]]; then
    "$ROOT/scripts/s3-fast.sh" stop --state-dir "$SRV"
  else
    "$ROOT/scripts/s3-server.sh" stop --state-dir "$SRV"
  fi
}
BUILD_PIDS=()
cleanup() {
  local p
  for p in "${BUILD_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  server_stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

server_start
EP=$COFFER_TEST_S3_ENDPOINT
BUCKET=$COFFER_TEST_S3_BUCKET
export AWS_ACCESS_KEY_ID=$COFFER_TEST_S3_ACCESS_KEY_ID
export AWS_SECRET_ACCESS_KEY=$COFFER_TEST_S3_SECRET_ACCESS_KEY
export COFFER_PASSWORD=$PASS RESTIC_PASSWORD=$PASS RESTIC_PROGRESS_FPS=0.1
log "server $S3_SERVER at $EP, $HOSTS hosts x $NIGHTS nights, tools: $TOOLS"

log_lines() { wc -l <"$SERVER_LOG"; }
requests_since() {
  if [[ $S3_SERVER == fast ]]; then
    "$ROOT/scripts/s3-fast.sh" count --state-dir "$SRV" --since "$1"
  else
    tail -n "+$(($1 + 1))" "$SERVER_LOG" | awk '
      match($0, /"(GET|PUT|POST|HEAD|DELETE) /) { n++; m = substr($0, RSTART + 1, RLENGTH - 2); ops[m]++ }
      END { printf "%d", n; for (o in ops) printf " %s=%d", o, ops[o]; printf "\n" }'
  fi
}

count_objects() { # count_objects PREFIX: objects under BUCKET/PREFIX/
  if [[ $S3_SERVER == fast ]]; then
    if [[ -d $COFFER_TEST_S3_DATA/$BUCKET/$1 ]]; then
      find "$COFFER_TEST_S3_DATA/$BUCKET/$1" -type f | wc -l
    else
      echo 0
    fi
  else
    local py=python3
    [[ -x ${COFFER_S3_VENV:-$HOME/.cache/coffer/s3-venv}/bin/python ]] &&
      py=${COFFER_S3_VENV:-$HOME/.cache/coffer/s3-venv}/bin/python
    "$py" - "$EP" "$BUCKET" "$1/" <<'PY'
import sys, boto3
ep, bucket, prefix = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=ep, region_name="us-east-1")
n = 0
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
    n += page.get("KeyCount", 0)
print(n)
PY
  fi
}

repo_of() { # repo_of TOOL: the repository URL
  case $1 in
    coffer) echo "s3://$BUCKET/coffer?endpoint=$EP" ;;
    restic) echo "s3:$EP/$BUCKET/restic" ;;
  esac
}

meta() { printf '%s\t%s\n' "$1" "$2" >>"$META"; }

# measure PHASE STEP TOOL RUN: "${CMD[@]}" under /usr/bin/time, a row in raw.tsv
measure() {
  local phase=$1 step=$2 tool=$3 run=$4 out="$W/logs/$1.$2.$3.$4" l0 req
  l0=$(log_lines)
  if ! /usr/bin/time -f '%e %U %S %M' -o "$out.time" "${CMD[@]}" >"$out.out" 2>"$out.err"; then
    tail -n 20 "$out.err" >&2
    die "$phase $step ($tool, run $run) failed: ${CMD[*]}"
  fi
  req=$(requests_since "$l0")
  local wall user sys rss
  read -r wall user sys rss < <(tail -n 1 "$out.time")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$phase" "$step" "$tool" "$run" "$wall" \
    "$(python3 -c "print(round($user + $sys, 2))")" "$rss" "${req%% *}" "${req#* }" >>"$RAW"
  log "$phase $step $tool #$run: ${wall}s wall, $((rss / 1024)) MiB RSS, ${req%% *} requests"
}

# ---------------------------------------------------------------------------------------------
# Build the repositories

# night DIR N: host directories under DIR at night N (1: create them)
night() {
  python3 - "$1" "$2" "$HOSTS" "$FILES" <<'PY'
import os, random, sys
root, n, hosts, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
words = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi "
         "rho sigma tau upsilon phi chi psi omega backup bucket host night index pack").split()
for h in range(1, hosts + 1):
    d = os.path.join(root, f"host-{h}")
    rng = random.Random(h * 100003 + n)
    if n == 1:
        for i in range(files):
            sub = os.path.join(d, f"dir-{i % 10}")
            os.makedirs(sub, exist_ok=True)
            with open(os.path.join(sub, f"file-{i:04}.txt"), "w") as f:
                size = rng.randint(1024, 8192)
                text = []
                while sum(map(len, text)) < size:
                    text.append(" ".join(rng.choice(words) for _ in range(12)) + f" {rng.getrandbits(32):x}\n")
                f.write("".join(text))
        continue
    for i in rng.sample(range(files), 2):
        with open(os.path.join(d, f"dir-{i % 10}", f"file-{i:04}.txt"), "a") as f:
            f.write(f"night {n} host {h} {rng.getrandbits(64):x}\n")
    os.makedirs(os.path.join(d, "nights"), exist_ok=True)
    with open(os.path.join(d, "nights", f"night-{n:04}.txt"), "w") as f:
        f.write("".join(f"night {n} line {k} {rng.getrandbits(64):x}\n" for k in range(40)))
PY
}

day_of() { date -u -d "2025-01-01 + $(($1 - 1)) days" +%F; }

build() { # build TOOL: all nights of all hosts, in this process
  local tool=$1 repo d h day
  repo=$(repo_of "$tool")
  case $tool in
    coffer) "$COFFER" --repo "$repo" --cache-dir "$W/cache/build-coffer-host-1" init ;;
    restic) "$RESTIC" --repo "$repo" --cache-dir "$W/cache/build-restic-host-1" init ;;
  esac >"$W/logs/build-$tool.init" 2>&1 || die "init $tool failed"
  for d in $(seq "$NIGHTS"); do
    night "$W/hosts-$tool" "$d"
    day=$(day_of "$d")
    for h in $(seq "$HOSTS"); do
      case $tool in
        coffer)
          "$COFFER" --repo "$repo" --cache-dir "$W/cache/build-coffer-host-$h" -q backup \
            --host "host-$h" --time "${day}T03:00:00Z" "data=$W/hosts-coffer/host-$h" ;;
        restic)
          "$RESTIC" --repo "$repo" --cache-dir "$W/cache/build-restic-host-$h" -q backup \
            --host "host-$h" --time "$day 03:00:00" "$W/hosts-restic/host-$h" ;;
      esac >>"$W/logs/build-$tool.out" 2>&1 || die "backup $tool night $d host $h failed"
    done
    if ((d % 10 == 0 || d == NIGHTS)); then log "built $tool: night $d of $NIGHTS"; fi
  done
}

if [[ $KEEP != 1 ]]; then
  meta date "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  meta scale "$HOSTS hosts x $NIGHTS nights = $((HOSTS * NIGHTS)) snapshots, $FILES files a host"
  meta server "$S3_SERVER"
  if [[ -n ${COFFER_BIN:-} ]]; then
    meta coffer "COFFER_BIN=$COFFER_BIN"
  else
    meta coffer "$(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo unknown)"
  fi
  meta restic "$("$RESTIC" version 2>/dev/null | head -n1)"
  meta load_build_start "$(cut -d' ' -f1-3 /proc/loadavg)"
  t0=$(date +%s)
  for tool in $TOOLS; do
    build "$tool" &
    BUILD_PIDS+=($!)
  done
  for p in "${BUILD_PIDS[@]}"; do wait "$p" || die "a build failed (logs in $W/logs)"; done
  BUILD_PIDS=()
  meta build_seconds "$(($(date +%s) - t0)) (all tools at once)"
fi

# ---------------------------------------------------------------------------------------------
# Measure

next_day=$(day_of $((NIGHTS + 1)))
counts() { # counts PHASE TOOL
  local prefix=$2
  meta "objects_$1_$2" "index $(count_objects "$prefix/index"), snapshots $(count_objects "$prefix/snapshots")"
}

cold() { # cold PHASE TOOL: the cold-start steps, COLD_RUNS times
  local phase=$1 tool=$2 repo r c
  repo=$(repo_of "$tool")
  for r in $(seq "$RUNS"); do
    c="$W/cache/cold-$phase-$tool-$r"
    rm -rf "$c" "$c-b"
    case $tool in
      coffer) CMD=("$COFFER" --repo "$repo" --cache-dir "$c" snapshots) ;;
      restic) CMD=("$RESTIC" --repo "$repo" --cache-dir "$c" snapshots) ;;
    esac
    measure "$phase" snapshots "$tool" "$r"
    case $tool in
      coffer) CMD=("$COFFER" --repo "$repo" --cache-dir "$c-b" backup --host host-1 \
        --time "${next_day}T03:00:00Z" "data=$W/hosts-coffer/host-1") ;;
      restic) CMD=("$RESTIC" --repo "$repo" --cache-dir "$c-b" backup --host host-1 \
        --time "$next_day 03:00:00" "$W/hosts-restic/host-1") ;;
    esac
    measure "$phase" backup "$tool" "$r"
    rm -rf "$c" "$c-b"
  done
}

meta load_measure_start "$(cut -d' ' -f1-3 /proc/loadavg)"
for tool in $TOOLS; do
  counts before "$tool"
  cold before "$tool"
done
for tool in $TOOLS; do
  rm -rf "$W/cache/prune-$tool"
  case $tool in
    coffer) CMD=("$COFFER" --repo "$(repo_of coffer)" --cache-dir "$W/cache/prune-coffer" prune) ;;
    restic) CMD=("$RESTIC" --repo "$(repo_of restic)" --cache-dir "$W/cache/prune-restic" prune) ;;
  esac
  measure prune prune "$tool" 1
  counts after "$tool"
done
for tool in $TOOLS; do cold after "$tool"; done
meta load_measure_end "$(cut -d' ' -f1-3 /proc/loadavg)"
meta uptime "$(uptime)"

# ---------------------------------------------------------------------------------------------
# Report

python3 - "$RAW" "$META" "$W/results.md" <<'PY'
import statistics, sys
raw, meta, out = sys.argv[1:4]
m = {}
for l in open(meta):
    if "\t" in l:
        k, v = l.rstrip("\n").split("\t", 1)
        m[k] = v
rows = [l.rstrip("\n").split("\t") for l in open(raw) if l.strip()]
med = lambda xs: statistics.median(float(x) for x in xs)
lines = [f"Scale: {m.get('scale')}; server {m.get('server')}; coffer {m.get('coffer')}; {m.get('restic')}; "
         f"built in {m.get('build_seconds')} s; load {m.get('load_measure_start')} when measuring began, "
         f"{m.get('load_measure_end')} at the end", ""]
for k in sorted(m):
    if k.startswith("objects_"):
        lines.append(f"- {k[8:].replace('_', ' ', 1)}: {m[k]}")
lines += ["", "| phase | step | tool | runs | wall s | CPU s | peak RSS MiB | requests |",
          "|---|---|---|---|---|---|---|---|"]
seen = []
for r in rows:
    key = tuple(r[:3])
    if key not in seen:
        seen.append(key)
for key in seen:
    rs = [r for r in rows if tuple(r[:3]) == key]
    lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {len(rs)} | {med(r[4] for r in rs):.2f} | "
                 f"{med(r[5] for r in rs):.2f} | {med(r[6] for r in rs) / 1024:.0f} | "
                 f"{med(r[7] for r in rs):.0f} |")
lines += ["", "Requests by operation (run 1):", ""]
for r in rows:
    if r[3] == "1":
        lines.append(f"- {r[0]} {r[1]} {r[2]}: {r[8]}")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
log "results in $W/results.md"
