#!/usr/bin/env bash
# A fast S3-compatible server on loopback for throughput figures (issue 19): s3s-fs, the
# file-system backend of the s3s crate (crates.io), on 127.0.0.1 with one bucket. moto
# (scripts/s3-server.sh) stays the server of the correctness tests; it serves requests one at a
# time from Python and tops out at about 60 MB/s here, which is what this one is for.
#
#   scripts/s3-fast.sh start [--state-dir DIR] [--keep-data] [--owner-pid PID]
#       Installs s3s-fs on first use (cargo install into ~/.cache/coffer/s3s-fs), starts it on
#       127.0.0.1 on a free port with request authentication on (SigV4), waits until it
#       answers, creates the bucket, and prints, as scripts/s3-server.sh does,
#           export COFFER_TEST_S3_ENDPOINT=http://127.0.0.1:PORT
#           export COFFER_TEST_S3_ACCESS_KEY_ID=coffer-test
#           export COFFER_TEST_S3_SECRET_ACCESS_KEY=coffer-test-secret
#           export COFFER_TEST_S3_BUCKET=coffer-test
#           export COFFER_TEST_S3_PID=...
#       and two more:
#           export COFFER_TEST_S3_LOG=DIR/s3s-fs.log     the request log (below)
#           export COFFER_TEST_S3_DATA=DIR/data          the objects: DATA/BUCKET/KEY, plain files
#       (so: eval "$(scripts/s3-fast.sh start)"). The data directory is emptied at start unless
#       --keep-data is given (then a restarted server serves the objects of the last one).
#       With --owner-pid the server stops by itself once that process is gone.
#   scripts/s3-fast.sh stop [--state-dir DIR]
#       Stops the server started with that state directory (the data stays until the next start).
#   scripts/s3-fast.sh count [--state-dir DIR] [--since LINE]
#       Prints the requests in the request log after line LINE (default 0), as
#       "TOTAL op=N op=N ..." (S3 operation names, e.g. PutObject=12).
#
# The request log: s3s logs one "resolved route" event per request it parses at debug level
# (RUST_LOG=s3s::ops=debug, the default here; S3_FAST_LOG=off turns it off, any other value is
# used as RUST_LOG). `count` counts those events; a request that fails before routing (bad
# signature) is not counted.
#
# s3s-fs is installed with one line patched: an empty `delimiter=` (restic's recursive listing
# of data/) is taken as no delimiter, as AWS does (see install_s3s).
#
# Environment: COFFER_S3S_ROOT (cargo install root, default ~/.cache/coffer/s3s-fs),
# COFFER_S3S_VERSION (default 0.14.1), COFFER_S3_BUCKET (default coffer-test),
# S3_FAST_LOG (above).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATE_DIR="$ROOT/target/s3-fast"
OWNER_PID=""
KEEP=0
SINCE=0
BUCKET="${COFFER_S3_BUCKET:-coffer-test}"
S3S_ROOT="${COFFER_S3S_ROOT:-${HOME:-/tmp}/.cache/coffer/s3s-fs}"
S3S_VERSION="${COFFER_S3S_VERSION:-0.14.1}"
BIN="$S3S_ROOT/bin/s3s-fs"
KEY_ID=coffer-test
SECRET=coffer-test-secret

die() { echo "s3-fast: $*" >&2; exit 1; }

install_s3s() {
  # s3s-fs 0.14.1 (and 0.17.0) takes an empty `delimiter=`, which restic's minio-go sends to
  # list data/ recursively, for the delimiter "" and lists nothing: restic then sees no packs
  # ("packs from index missing in repo"). AWS treats an empty delimiter as none. So the source
  # is fetched (cargo vendor), that one line is patched, and the patched crate is installed
  # (cargo install --path, with the crate's own Cargo.lock).
  local work="$S3S_ROOT/build"
  command -v cargo >/dev/null 2>&1 || die "cargo is needed to install s3s-fs"
  echo "s3-fast: installing s3s-fs $S3S_VERSION into $S3S_ROOT (cargo install, a few minutes)" >&2
  rm -rf "$work"
  mkdir -p "$work/shim/src"
  printf '%s\n' '[package]' 'name = "s3s-fs-source"' 'version = "0.0.0"' 'edition = "2021"' \
    'publish = false' '' '[dependencies]' "s3s-fs = \"=$S3S_VERSION\"" '' '[workspace]' \
    >"$work/shim/Cargo.toml"
  echo 'fn main() {}' >"$work/shim/src/main.rs"
  (cd "$work/shim" && cargo vendor --versioned-dirs -q "$work/vendor" >/dev/null) ||
    die "cargo vendor (fetching the s3s-fs source) failed"
  cp -r "$work/vendor/s3s-fs-$S3S_VERSION" "$work/s3s-fs"
  rm -f "$work/s3s-fs/.cargo-checksum.json"
  sed -i 's/let delimiter = input.delimiter.as_deref();/let delimiter = input.delimiter.as_deref().filter(|d| !d.is_empty());/' \
    "$work/s3s-fs/src/s3.rs"
  grep -q 'filter(|d| !d.is_empty())' "$work/s3s-fs/src/s3.rs" ||
    die "s3s-fs $S3S_VERSION: the empty-delimiter patch did not apply (another version?)"
  nice -n 19 cargo install --path "$work/s3s-fs" --features binary --locked \
    --root "$S3S_ROOT" >&2 || die "cargo install s3s-fs failed"
  rm -rf "$work/vendor" "$work/shim"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start() {
  local port pid level
  [ -x "$BIN" ] || install_s3s
  [ -x "$BIN" ] || die "no s3s-fs binary at $BIN after installing it"
  command -v python3 >/dev/null 2>&1 || die "python3 is needed (free port)"
  command -v curl >/dev/null 2>&1 || die "curl is needed (health check)"
  mkdir -p "$STATE_DIR"
  if [ -f "$STATE_DIR/s3s-fs.pid" ] && kill -0 "$(cat "$STATE_DIR/s3s-fs.pid")" 2>/dev/null; then
    die "a server of $STATE_DIR is running (pid $(cat "$STATE_DIR/s3s-fs.pid")): stop it first"
  fi
  if [ "$KEEP" = 0 ]; then rm -rf "$STATE_DIR/data"; fi
  # s3s-fs serves each directory of its root as a bucket: creating the bucket is a mkdir.
  mkdir -p "$STATE_DIR/data/$BUCKET"
  port="$(free_port)"
  level="${S3_FAST_LOG:-s3s::ops=debug}"
  [ "$level" = off ] && level=off
  RUST_LOG="$level" setsid "$BIN" --host 127.0.0.1 --port "$port" \
    --access-key "$KEY_ID" --secret-key "$SECRET" "$STATE_DIR/data" \
    >"$STATE_DIR/s3s-fs.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$STATE_DIR/s3s-fs.pid"
  echo "$port" >"$STATE_DIR/s3s-fs.port"
  local i code=000
  for i in $(seq 300); do
    # Any HTTP answer will do (an unsigned request gets 403).
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$port/$BUCKET" || true)"
    [ "$code" != 000 ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ "$code" = 000 ]; then
    kill "$pid" 2>/dev/null || true
    tail -n 20 "$STATE_DIR/s3s-fs.log" >&2
    die "s3s-fs did not start"
  fi
  echo "export COFFER_TEST_S3_ENDPOINT=http://127.0.0.1:$port"
  echo "export COFFER_TEST_S3_ACCESS_KEY_ID=$KEY_ID"
  echo "export COFFER_TEST_S3_SECRET_ACCESS_KEY=$SECRET"
  echo "export COFFER_TEST_S3_BUCKET=$BUCKET"
  echo "export COFFER_TEST_S3_PID=$pid"
  echo "export COFFER_TEST_S3_LOG=$STATE_DIR/s3s-fs.log"
  echo "export COFFER_TEST_S3_DATA=$STATE_DIR/data"
  if [ -n "$OWNER_PID" ]; then
    setsid bash -c 'while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 1; done; kill "$2" 2>/dev/null' \
      _ "$OWNER_PID" "$pid" >/dev/null 2>&1 </dev/null &
  fi
}

stop() {
  local pid i
  [ -f "$STATE_DIR/s3s-fs.pid" ] || { echo "s3-fast: not running" >&2; return 0; }
  pid="$(cat "$STATE_DIR/s3s-fs.pid")"
  if kill "$pid" 2>/dev/null; then
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$STATE_DIR/s3s-fs.pid"
}

count() {
  local log="$STATE_DIR/s3s-fs.log"
  [ -f "$log" ] || die "no request log at $log"
  # The pretty format: "... resolved route, op: PutObject, s3_path: ..." (colours stripped).
  tail -n "+$((SINCE + 1))" "$log" | sed 's/\x1b\[[0-9;]*m//g' | awk '
    /resolved route/ { n++; op = $0; sub(/.*op: /, "", op); sub(/[, ].*/, "", op); ops[op]++ }
    END { printf "%d", n; for (o in ops) printf " %s=%d", o, ops[o]; printf "\n" }'
}

cmd="${1:-}"
shift || true
while [ $# -gt 0 ]; do
  case "$1" in
    --owner-pid) OWNER_PID="$2"; shift 2 ;;
    --state-dir) STATE_DIR="$2"; shift 2 ;;
    --keep-data) KEEP=1; shift ;;
    --since) SINCE="$2"; shift 2 ;;
    *) die "unknown option $1" ;;
  esac
done
case "$cmd" in
  start) start ;;
  stop) stop ;;
  count) count ;;
  *) die "usage: $0 start [--state-dir DIR] [--keep-data] [--owner-pid PID] | stop [--state-dir DIR] | count [--state-dir DIR] [--since LINE]" ;;
esac
