#!/usr/bin/env bash
# coffer and restic side by side on one S3 server on loopback (issue 19). Documented in
# docs/performance.md, "S3 side by side (issue 19)".
#
#   scripts/bench-s3.sh                          # s3s-fs (scripts/s3-fast.sh), small corpus
#   S3_SERVER=moto scripts/bench-s3.sh           # moto (scripts/s3-server.sh)
#   BENCH_SIZE=full BENCH_RUNS=5 scripts/bench-s3.sh
#
# Steps, each in a fresh repository prefix per run: initial backup, no-change backup (the cache
# of the initial one, warm), full restore to a fresh directory on disk (same cache). Every
# step runs under /usr/bin/time (wall, user+sys CPU, peak RSS of the client). Counted on the
# server side of the same step:
#   requests   the server's request log: s3s-fs's "resolved route" events (scripts/s3-fast.sh
#              count), moto's access log lines; requests the server rejected before routing are
#              not counted (none in a good run)
#   MB up/down bytes of the IP packets to and from the server port on loopback (HTTP headers and
#              bodies, TCP/IP headers of each packet: a few % over the payload), from two
#              iptables accounting rules without a target, added for the run and removed at the
#              end (root only; BENCH_COUNT_BYTES=off, or without iptables, the columns are empty)
#   srv CPU    user+sys seconds of the server process (/proc/PID/stat)
# Runs are interleaved by step (initial of every configuration, then no-change, then restore)
# so that other load hits all alike. Medians of BENCH_RUNS runs, each column on its own.
#
# Environment:
#   S3_SERVER        fast (s3s-fs, default) | moto
#   BENCH_SIZE       small: 96 MiB of real small files + 64 MiB of random media (default);
#                    full: all of /usr/share/doc and ~/.cargo/registry/src + 256 MiB of media
#                    (scripts/bench-corpus.py workspace/media)
#   BENCH_S3_FILES_MB, BENCH_S3_MEDIA_MB   override the two sizes (FILES 0 = all)
#   BENCH_RUNS       runs per step, the median is reported; default 3
#   BENCH_CONFIGS    default "coffer restic coffer-c8": coffer = defaults (backup --connections
#                    4, URL connections=8); coffer-cN = backup --connections N and URL
#                    connections=2N (restore uses the URL's); restic = defaults (5 connections);
#                    restic-cN = -o s3.connections=N
#   BENCH_DIR        work directory, wiped at the start; default /var/tmp/coffer-bench-s3-$BENCH_SIZE
#   BENCH_SEED       seed of the media files; default 1
#   BENCH_SKIP_BUILD 1: use the existing target/release/coffer
#   BENCH_COUNT_BYTES auto (iptables when root and present) | off
#   COFFER_BIN, RESTIC   binaries (default target/release/coffer, restic on PATH)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
S3_SERVER=${S3_SERVER:-fast}
BENCH_SIZE=${BENCH_SIZE:-small}
BENCH_DIR=${BENCH_DIR:-/var/tmp/coffer-bench-s3-$BENCH_SIZE}
BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_SEED=${BENCH_SEED:-1}
BENCH_CONFIGS=${BENCH_CONFIGS:-coffer restic coffer-c8}
BENCH_COUNT_BYTES=${BENCH_COUNT_BYTES:-auto}
COFFER=${COFFER_BIN:-$ROOT/target/release/coffer}
RESTIC=${RESTIC:-restic}
W=$BENCH_DIR
C=$W/corpus
RAW=$W/raw.tsv
META=$W/meta.tsv
SRV=$W/server
PASS=bench-passphrase

log() { printf '[bench-s3 %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

case $BENCH_SIZE in
  small) FILES_MB=${BENCH_S3_FILES_MB:-96} MEDIA_MB=${BENCH_S3_MEDIA_MB:-64} ;;
  full) FILES_MB=${BENCH_S3_FILES_MB:-0} MEDIA_MB=${BENCH_S3_MEDIA_MB:-256} ;;
  *) die "BENCH_SIZE must be small or full" ;;
esac
case $S3_SERVER in fast | moto) ;; *) die "S3_SERVER must be fast or moto" ;; esac
[[ $BENCH_RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"
for c in $BENCH_CONFIGS; do
  [[ $c =~ ^(coffer|restic)(-c[1-9][0-9]*)?$ ]] || die "unknown configuration $c"
done
[[ -x /usr/bin/time ]] || die "/usr/bin/time is needed (apt-get install -y time)"
command -v python3 >/dev/null || die "python3 is needed"

if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
  log "building coffer (release)"
  (cd "$ROOT" && cargo build --release --quiet)
fi
[[ -x $COFFER ]] || die "no coffer binary at $COFFER"
if ! command -v "$RESTIC" >/dev/null; then
  log "installing restic from the Debian packages"
  apt-get install -y restic >/dev/null ||
    { apt-get update >/dev/null && apt-get install -y restic >/dev/null; } ||
    die "could not install restic"
fi
RESTIC=$(command -v "$RESTIC")

# ---------------------------------------------------------------------------------------------
# Server and counters

log "work directory $W (S3_SERVER=$S3_SERVER, BENCH_SIZE=$BENCH_SIZE, BENCH_RUNS=$BENCH_RUNS)"
rm -rf "$W"
mkdir -p "$W/logs" "$W/cache" "$W/restore" "$SRV"
: >"$RAW"
: >"$META"

SERVER_LOG=""
server_start() {
  local out
  if [[ $S3_SERVER == fast ]]; then
    out=$("$ROOT/scripts/s3-fast.sh" start --state-dir "$SRV")
  else
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

IPT_RULES=()
ipt_cleanup() {
  local r
  for r in "${IPT_RULES[@]}"; do
    # shellcheck disable=SC2086 # a rule is a list of words
    iptables -w -D INPUT $r 2>/dev/null || true
  done
  IPT_RULES=()
}
cleanup() {
  ipt_cleanup
  server_stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

server_start
PORT=${COFFER_TEST_S3_ENDPOINT##*:}
EP=$COFFER_TEST_S3_ENDPOINT
BUCKET=$COFFER_TEST_S3_BUCKET
SRV_PID=$COFFER_TEST_S3_PID
export AWS_ACCESS_KEY_ID=$COFFER_TEST_S3_ACCESS_KEY_ID
export AWS_SECRET_ACCESS_KEY=$COFFER_TEST_S3_SECRET_ACCESS_KEY
export COFFER_PASSWORD=$PASS RESTIC_PASSWORD=$PASS RESTIC_PROGRESS_FPS=0.1
log "server $S3_SERVER at $EP (pid $SRV_PID)"

COUNT_BYTES=0
if [[ $BENCH_COUNT_BYTES != off ]] && [[ $(id -u) == 0 ]] && command -v iptables >/dev/null; then
  up="-i lo -p tcp --dport $PORT -m comment --comment coffer-bench-s3-up-$PORT"
  down="-i lo -p tcp --sport $PORT -m comment --comment coffer-bench-s3-down-$PORT"
  # shellcheck disable=SC2086
  if iptables -w -I INPUT $up 2>/dev/null; then
    IPT_RULES+=("$up")
    # shellcheck disable=SC2086
    iptables -w -I INPUT $down && IPT_RULES+=("$down") && COUNT_BYTES=1
  fi
fi
[[ $COUNT_BYTES == 1 ]] || log "bytes are not counted (BENCH_COUNT_BYTES=off, not root or no iptables)"

wire_bytes() { # "UP DOWN": bytes counted so far to and from the server port
  if [[ $COUNT_BYTES != 1 ]]; then
    echo "0 0"
    return
  fi
  iptables -w -L INPUT -v -n -x 2>/dev/null | awk -v p="$PORT" '
    $0 ~ "coffer-bench-s3-up-" p " " { up = $2 }
    $0 ~ "coffer-bench-s3-down-" p " " { down = $2 }
    END { printf "%.0f %.0f\n", up, down }'
}
log_lines() { wc -l <"$SERVER_LOG"; }
requests_since() { # "TOTAL op=N ...": requests logged after line $1
  if [[ $S3_SERVER == fast ]]; then
    "$ROOT/scripts/s3-fast.sh" count --state-dir "$SRV" --since "$1"
  else
    # moto (werkzeug): one access line per request, '"PUT /bucket/key HTTP/1.1" 200 -'
    tail -n "+$(($1 + 1))" "$SERVER_LOG" | awk '
      match($0, /"(GET|PUT|POST|HEAD|DELETE) /) { n++; m = substr($0, RSTART + 1, RLENGTH - 2); ops[m]++ }
      END { printf "%d", n; for (o in ops) printf " %s=%d", o, ops[o]; printf "\n" }'
  fi
}
TICK=$(getconf CLK_TCK)
server_cpu() { # user+sys seconds of the server so far
  awk -v t="$TICK" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / t }' "/proc/$SRV_PID/stat"
}

# ---------------------------------------------------------------------------------------------
# Measurement

# measure STEP CFG RUN: run "${CMD[@]}" under /usr/bin/time, append a row to raw.tsv
measure() {
  local step=$1 cfg=$2 run=$3 out="$W/logs/$1.$2.$3"
  local l0 b0 s0 b1 s1 req
  sync
  l0=$(log_lines)
  b0=$(wire_bytes)
  s0=$(server_cpu)
  if ! /usr/bin/time -f '%e %U %S %M' -o "$out.time" "${CMD[@]}" >"$out.out" 2>"$out.err"; then
    tail -n 20 "$out.err" >&2
    die "$step ($cfg, run $run) failed: ${CMD[*]}"
  fi
  s1=$(server_cpu)
  b1=$(wire_bytes)
  req=$(requests_since "$l0")
  local wall user sys rss up0 down0 up1 down1
  read -r wall user sys rss < <(tail -n 1 "$out.time")
  read -r up0 down0 <<<"$b0"
  read -r up1 down1 <<<"$b1"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$step" "$cfg" "$run" "$wall" \
    "$(python3 -c "print(round($user + $sys, 2))")" "$rss" \
    "$(python3 -c "print(round($s1 - $s0, 2))")" "${req%% *}" \
    "$([[ $COUNT_BYTES == 1 ]] && echo $((up1 - up0)))" \
    "$([[ $COUNT_BYTES == 1 ]] && echo $((down1 - down0)))" "${req#* }" >>"$RAW"
  log "$step $cfg #$run: ${wall}s wall, $((rss / 1024)) MiB RSS, ${req%% *} requests, up $((up1 - up0)) down $((down1 - down0)) bytes"
}

meta() { printf '%s\t%s\n' "$1" "$2" >>"$META"; }

# cmd_for CFG RUN ARGS...: the command line of configuration CFG, run RUN, in CMD
cmd_for() {
  local cfg=$1 run=$2 n=""
  shift 2
  [[ $cfg == *-c* ]] && n=${cfg##*-c}
  case $cfg in
    coffer*)
      local url="s3://$BUCKET/$cfg-$run?endpoint=$EP"
      [[ -n $n ]] && url="$url&connections=$((2 * n))"
      CMD=("$COFFER" --repo "$url" --cache-dir "$W/cache/$cfg-$run" "$@")
      if [[ -n $n && " $* " == *" backup "* ]]; then CMD+=(--connections "$n"); fi
      ;;
    restic*)
      CMD=("$RESTIC" --repo "s3:$EP/$BUCKET/$cfg-$run" --cache-dir "$W/cache/$cfg-$run")
      [[ -n $n ]] && CMD+=(-o "s3.connections=$n")
      CMD+=("$@")
      ;;
  esac
}

file_sum() { # "FILES BYTES" of the regular files under $1
  find "$1" -type f -printf '%s\n' | awk '{ n++; b += $1 } END { print n + 0, b + 0 }'
}

# ---------------------------------------------------------------------------------------------
# Run

meta server "$S3_SERVER"
meta size "$BENCH_SIZE"
meta runs "$BENCH_RUNS"
meta configs "$BENCH_CONFIGS"
meta date "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
meta cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
meta cores "$(nproc)"
meta load_start "$(cut -d' ' -f1-3 /proc/loadavg)"
if [[ -n ${COFFER_BIN:-} ]]; then
  meta coffer "COFFER_BIN=$COFFER_BIN"
else
  meta coffer "$(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo unknown)"
fi
meta restic "$("$RESTIC" version | head -n1)"
meta count_bytes "$COUNT_BYTES"
if [[ $S3_SERVER == fast ]]; then
  meta server_version "s3s-fs $("$(dirname "$(readlink -f "/proc/$SRV_PID/exe")")/s3s-fs" --version 2>/dev/null | awk '{print $2}')"
else
  meta server_version "moto"
fi

log "generating the corpus ($FILES_MB MiB of small files (0: all), $MEDIA_MB MiB of media)"
python3 "$ROOT/scripts/bench-corpus.py" workspace "$C/files" "$FILES_MB"
python3 "$ROOT/scripts/bench-corpus.py" media "$C/media" "$MEDIA_MB" "$BENCH_SEED"
read -r CFILES CBYTES < <(file_sum "$C")
meta corpus_files "$CFILES"
meta corpus_bytes "$CBYTES"
find "$C" -type f -print0 | xargs -0 cat >/dev/null

log "initial backup (a fresh repository prefix per configuration and run)"
for r in $(seq "$BENCH_RUNS"); do
  for cfg in $BENCH_CONFIGS; do
    cmd_for "$cfg" "$r" init
    "${CMD[@]}" >"$W/logs/init.$cfg.$r.out" 2>&1 || die "init $cfg failed: ${CMD[*]}"
    if [[ $cfg == coffer* ]]; then cmd_for "$cfg" "$r" --json backup "$C"; else cmd_for "$cfg" "$r" backup "$C"; fi
    measure initial "$cfg" "$r"
  done
done

log "no-change backup (warm cache)"
for r in $(seq "$BENCH_RUNS"); do
  for cfg in $BENCH_CONFIGS; do
    if [[ $cfg == coffer* ]]; then cmd_for "$cfg" "$r" --json backup "$C"; else cmd_for "$cfg" "$r" backup "$C"; fi
    measure nochange "$cfg" "$r"
  done
done

log "full restore to disk (warm cache)"
for r in $(seq "$BENCH_RUNS"); do
  for cfg in $BENCH_CONFIGS; do
    t="$W/restore/$cfg-$r"
    rm -rf "$t"
    if [[ $cfg == coffer* ]]; then
      cmd_for "$cfg" "$r" restore latest -t "$t"
    else
      cmd_for "$cfg" "$r" restore latest --target "$t"
    fi
    measure restore "$cfg" "$r"
    got=$(file_sum "$t")
    [[ $got == "$CFILES $CBYTES" ]] || die "restore $cfg #$r: $got files/bytes, the corpus has $CFILES $CBYTES"
    rm -rf "$t"
  done
done
meta load_end "$(cut -d' ' -f1-3 /proc/loadavg)"
meta uptime "$(uptime)"

# ---------------------------------------------------------------------------------------------
# Report

python3 - "$RAW" "$META" "$W/results.md" <<'PY'
import statistics, sys
raw, meta, out = sys.argv[1:4]
m = dict(l.rstrip("\n").split("\t", 1) for l in open(meta) if "\t" in l)
rows = [l.rstrip("\n").split("\t") for l in open(raw) if l.strip()]
MB = 1e6
def med(xs):
    xs = [float(x) for x in xs if x != ""]
    return statistics.median(xs) if xs else None
corpus = int(m["corpus_bytes"])
lines = [f"S3 server: {m['server']} ({m.get('server_version', '')}), corpus {m['corpus_files']} files, "
         f"{corpus / MB:.1f} MB, {m['runs']} runs (medians), {m['date']}, coffer {m['coffer']}, "
         f"{m['restic']}, load {m['load_start']} at the start, {m['load_end']} at the end", ""]
names = {"initial": "initial backup", "nochange": "no-change backup", "restore": "full restore"}
for step in ("initial", "nochange", "restore"):
    lines += [f"**{names[step]}**", "",
              "| configuration | wall s | MB/s | CPU s | server CPU s | peak RSS MiB | requests | MB up | MB down |",
              "|---|---|---|---|---|---|---|---|---|"]
    cfgs = []
    for r in rows:
        if r[0] == step and r[1] not in cfgs:
            cfgs.append(r[1])
    for cfg in cfgs:
        rs = [r for r in rows if r[0] == step and r[1] == cfg]
        wall, cpu, rss, scpu, req = (med([r[i] for r in rs]) for i in (3, 4, 5, 6, 7))
        up, down = med([r[8] for r in rs]), med([r[9] for r in rs])
        rate = f"{corpus / MB / wall:.0f}" if step != "nochange" and wall else ""
        f = lambda x, d=1, s=1: "" if x is None else f"{x / s:.{d}f}"
        lines.append(f"| {cfg} | {wall:.2f} | {rate} | {cpu:.2f} | {f(scpu, 2)} | {rss / 1024:.0f} | "
                     f"{req:.0f} | {f(up, 2, MB)} | {f(down, 2, MB)} |")
    lines.append("")
lines += ["Requests by operation (run 1):", ""]
for r in rows:
    if r[2] == "1":
        lines.append(f"- {r[0]} {r[1]}: {r[10]}")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
log "results in $W/results.md, raw rows in $RAW"
