#!/usr/bin/env bash
# Restore from S3, coffer against restic: one moto server, one corpus, one counting proxy.
#
#   scripts/restore-vs-restic.sh
#   RUNS=5 COLD_CACHE=1 EXTRA_MIB=256 scripts/restore-vs-restic.sh
#   DATA=/srv/data WORK_DIR=/srv/restore-bench COFFER_BIN=target/debug/coffer scripts/restore-vs-restic.sh
#
# Starts moto with scripts/s3-server.sh, puts a small counting HTTP proxy (python3, written
# below) in front of it, backs the corpus up once with each tool (one bucket each: coffer-test
# and restic), then restores the latest snapshot RUNS times with each tool, interleaved. Per
# tool it reports the requests the server received during the restores (GET and the rest), the
# response body bytes the server sent, the median wall time, and whether every restored tree
# equals the corpus (diff -r --no-dereference, plus a listing of type, mode, size and link
# target of every entry). The counters cover the restores only, not the backups.
#
# Environment:
#   RUNS         restores per tool, the median is reported; default 3
#   DATA         directory to back up; default /usr/share/doc. It is copied into the work
#                directory first (so EXTRA_MIB never touches it): mind the free space.
#   EXTRA_MIB    add one file of N MiB of random data to the copy; default 0
#   WORK_DIR     work directory: corpus copy, caches, restores, logs, proxy counters and the
#                result restore-vs-restic.json; default target/restore-bench of this checkout
#                (on disk; use /dev/shm/... only on purpose, then the disk is out of it).
#                Its corpus/, restore/, cache/, s3/ and logs/ are wiped at the start; at the
#                end corpus/, restore/ and cache/ are removed (KEEP=1 keeps corpus/ and cache/).
#   COLD_CACHE   0 (default): warm cache. Each tool restores with the --cache-dir its backup
#                filled (coffer: the catalog; restic: index and snapshot files, and what
#                restic caches of the packs it reads).
#                1: cold cache. Each restore gets a fresh, empty --cache-dir, for both tools
#                (restic's --no-cache is not used: with an empty cache dir restic behaves as on
#                a new machine, which is the same situation coffer is in).
#   KEEP         1: keep corpus/ and cache/ after the run (restores are always removed)
#   TOOLS        the tools to measure, default "coffer restic" (one of them alone works too)
#   COFFER_BIN   coffer binary; default target/release/coffer of this checkout (not built here)
#   RESTIC       restic binary; default restic on PATH, installed from Debian if missing
#
# Output: a markdown table on stdout, the same data with every run in
# $WORK_DIR/restore-vs-restic.json, and command output, proxy counters and a log of every
# request the proxy forwarded (method, path, status, bytes) under $WORK_DIR/logs/.
# "bytes fetched" is the sum of the HTTP response bodies the server sent (object data, listing
# XML, error bodies), in MB of 10^6 bytes; "GET requests" counts every GET (object reads,
# ranged or not, and listings); the other methods are in their own column.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-3}
DATA=${DATA:-/usr/share/doc}
EXTRA_MIB=${EXTRA_MIB:-0}
WORK_DIR=${WORK_DIR:-$ROOT/target/restore-bench}
COLD_CACHE=${COLD_CACHE:-0}
KEEP=${KEEP:-0}
TOOLS=${TOOLS:-coffer restic}
COFFER=${COFFER_BIN:-$ROOT/target/release/coffer}
RESTIC=${RESTIC:-restic}
W=$WORK_DIR
C=$W/corpus/data  # the copy of DATA; both tools back up this directory as "data"
RAW=$W/logs/runs.tsv
PASS=restore-bench-passphrase
COFFER_BUCKET=coffer-test  # created by scripts/s3-server.sh
RESTIC_BUCKET=restic
PROXY_PID=""
S3_STARTED=0

log() { printf '[restore-bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
[[ $EXTRA_MIB =~ ^[0-9]+$ ]] || die "EXTRA_MIB must be a whole number of MiB"
[[ $COLD_CACHE == 0 || $COLD_CACHE == 1 ]] || die "COLD_CACHE must be 0 or 1"
[[ -d $DATA ]] || die "DATA=$DATA is not a directory"
for tool in $TOOLS; do
  [[ $tool == coffer || $tool == restic ]] || die "TOOLS: unknown tool $tool (coffer, restic)"
done
uses() { [[ " $TOOLS " == *" $1 "* ]]; }
command -v python3 >/dev/null || die "python3 is needed (proxy and report)"

# ---------------------------------------------------------------------------------------------
# Tools

check_tools() {
  if uses coffer && [[ ! -x $COFFER ]]; then
    log "no coffer binary at $COFFER; build it first:"
    log "  (cd $ROOT && cargo build --release)"
    log "or point COFFER_BIN at one (e.g. COFFER_BIN=$ROOT/target/debug/coffer after cargo build)"
    exit 1
  fi
  uses restic || return 0
  if ! command -v "$RESTIC" >/dev/null; then
    log "installing restic from the Debian packages"
    local sudo=()
    [[ $(id -u) == 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get install -y restic >/dev/null ||
      { "${sudo[@]}" apt-get update >/dev/null && "${sudo[@]}" apt-get install -y restic >/dev/null; } ||
      die "could not install restic"
  fi
  RESTIC=$(command -v "$RESTIC")
}

# The python that runs moto (the same search as scripts/s3-server.sh), for its version only.
moto_version() {
  local py
  for py in python3 "${COFFER_S3_VENV:-${HOME:-/tmp}/.cache/coffer/s3-venv}/bin/python"; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import moto.server' >/dev/null 2>&1; then
      "$py" -c 'import moto; print("moto", moto.__version__)'
      return 0
    fi
  done
  echo "moto (version unknown)"
}

# ---------------------------------------------------------------------------------------------
# S3: moto, and the counting proxy in front of it

cleanup() {
  local rc=$?
  if [[ -n $PROXY_PID ]]; then kill "$PROXY_PID" 2>/dev/null || true; fi
  if [[ $S3_STARTED == 1 ]]; then "$ROOT/scripts/s3-server.sh" stop --state-dir "$W/s3" || true; fi
  rm -rf "$W/restore"
  if [[ $KEEP != 1 ]]; then rm -rf "$W/corpus" "$W/cache"; fi
  exit "$rc"
}

start_s3() {
  log "starting moto (scripts/s3-server.sh)"
  local env
  S3_STARTED=1
  env=$("$ROOT/scripts/s3-server.sh" start --state-dir "$W/s3") || die "moto did not start"
  eval "$env"
  [[ ${COFFER_TEST_S3_BUCKET:-} == "$COFFER_BUCKET" ]] ||
    die "scripts/s3-server.sh created bucket ${COFFER_TEST_S3_BUCKET:-?}, expected $COFFER_BUCKET (unset COFFER_S3_BUCKET)"
  export AWS_ACCESS_KEY_ID=$COFFER_TEST_S3_ACCESS_KEY_ID
  export AWS_SECRET_ACCESS_KEY=$COFFER_TEST_S3_SECRET_ACCESS_KEY
  export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
}

# The proxy: a threaded http.server that forwards every request to moto with http.client and
# counts requests by method and kind, request and response body bytes. It rewrites the JSON
# counter file before and after every request; "in_flight" says whether one is under way.
write_proxy() {
  cat >"$W/proxy.py" <<'PY'
import http.client, http.server, json, os, socket, sys, threading, time
from urllib.parse import parse_qs, urlsplit

UPSTREAM = int(sys.argv[1])
STATS, PORT_FILE, LOG = sys.argv[2], sys.argv[3], sys.argv[4]
HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
       "upgrade", "expect", "content-length"}
lock = threading.Lock()
stats = {"requests": 0, "in_flight": 0, "by_method": {}, "by_kind": {}, "by_bucket": {},
         "bytes_sent": 0, "bytes_received": 0, "proxy_errors": 0}
log = open(LOG, "a", buffering=1)

def save():  # with lock held
    tmp = STATS + ".tmp"
    with open(tmp, "w") as f:
        json.dump(stats, f)
    os.replace(tmp, STATS)

def bump(d, k, n=1):
    d[k] = d.get(k, 0) + n

def classify(method, path, headers):
    u = urlsplit(path)
    bucket, _, key = u.path.lstrip("/").partition("/")
    q = parse_qs(u.query, keep_blank_values=True)
    if not key:
        what = "location" if "location" in q else "list" if method == "GET" else "bucket"
    elif method == "GET" and headers.get("Range"):
        what = "object range"
    elif "uploadId" in q or "uploads" in q:
        what = "multipart"
    else:
        what = "object"
    return bucket, f"{method} {what}"

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    up = None

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm
        # and the client's delayed ACK add 40 ms to every small answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                n = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(n))
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def forward(self, body):
        for attempt in (0, 1):  # a kept-alive upstream connection may have been closed
            try:
                if self.up is None:
                    self.up = http.client.HTTPConnection("127.0.0.1", UPSTREAM, timeout=600)
                    self.up.connect()
                    self.up.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.up.putrequest(self.command, self.path, skip_host=True,
                                   skip_accept_encoding=True)
                for k, v in self.headers.items():
                    if k.lower() not in HOP:
                        self.up.putheader(k, v)
                if body or self.command in ("PUT", "POST"):
                    self.up.putheader("Content-Length", str(len(body)))
                self.up.endheaders(body)
                return self.up.getresponse()
            except (http.client.HTTPException, OSError):
                if self.up is not None:
                    self.up.close()
                self.up = None
                if attempt:
                    raise

    def handle_one(self):
        with lock:
            stats["in_flight"] += 1
            save()
        sent = received = 0
        status = 0
        try:
            body = self.read_body()
            received = len(body)
            try:
                resp = self.forward(body)
            except Exception as e:
                with lock:
                    stats["proxy_errors"] += 1
                status = 502
                msg = f"proxy: upstream failed: {e}\n".encode()
                self.send_response_only(502)
                self.send_header("Content-Length", str(len(msg)))
                self.end_headers()
                self.wfile.write(msg)
                sent = len(msg)
                return
            status = resp.status
            no_body = self.command == "HEAD" or status in (204, 304) or status < 200
            self.send_response_only(status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in HOP:
                    self.send_header(k, v)
            if no_body:
                if resp.getheader("Content-Length") is not None:
                    self.send_header("Content-Length", resp.getheader("Content-Length"))
                self.end_headers()
                resp.read()
            elif resp.length is not None:
                self.send_header("Content-Length", str(resp.length))
                self.end_headers()
                while True:
                    chunk = resp.read(256 * 1024)
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    sent += len(chunk)
            else:  # chunked or close-delimited upstream: pass it on with a length
                data = resp.read()
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                sent = len(data)
            self.wfile.flush()
            if resp.will_close:
                self.up.close()
                self.up = None
        finally:
            bucket, kind = classify(self.command, self.path, self.headers)
            with lock:
                stats["in_flight"] -= 1
                stats["requests"] += 1
                bump(stats["by_method"], self.command)
                bump(stats["by_kind"], kind)
                bump(stats["by_bucket"], bucket)
                stats["bytes_sent"] += sent
                stats["bytes_received"] += received
                save()
            log.write(f"{time.time():.3f}\t{self.command}\t{self.path}\t{status}\t{received}\t{sent}\n")

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = handle_one

class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

srv = Server(("127.0.0.1", 0), Handler)
with lock:
    save()
with open(PORT_FILE + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
os.replace(PORT_FILE + ".tmp", PORT_FILE)
srv.serve_forever()
PY
}

start_proxy() {
  local upstream=${COFFER_TEST_S3_ENDPOINT##*:} i
  write_proxy
  rm -f "$W/proxy.port"
  setsid python3 "$W/proxy.py" "$upstream" "$W/proxy-stats.json" "$W/proxy.port" \
    "$W/logs/proxy-requests.log" >"$W/logs/proxy.err" 2>&1 </dev/null &
  PROXY_PID=$!
  for i in $(seq 100); do
    [[ -s $W/proxy.port ]] && break
    kill -0 "$PROXY_PID" 2>/dev/null || { cat "$W/logs/proxy.err" >&2; die "the proxy did not start"; }
    sleep 0.1
  done
  [[ -s $W/proxy.port ]] || die "the proxy did not start within 10 s"
  PROXY="http://127.0.0.1:$(cat "$W/proxy.port")"
  log "counting proxy on $PROXY, forwarding to $COFFER_TEST_S3_ENDPOINT (moto)"
}

create_bucket() { # create_bucket NAME: a plain PUT /NAME (moto does not check signatures)
  python3 - "$PROXY/$1" <<'PY' || die "could not create bucket $1"
import sys, urllib.request
with urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="PUT", data=b"")) as r:
    assert r.status == 200, r.status
PY
}

# Copy the proxy's counters once no request is under way (the tool has exited by then, so
# only the proxy's bookkeeping of its last answer can still be pending).
snapshot_stats() { # snapshot_stats FILE
  local i
  for i in $(seq 200); do
    if python3 -c 'import json, sys; sys.exit(json.load(open(sys.argv[1]))["in_flight"] != 0)' \
      "$W/proxy-stats.json" 2>/dev/null; then
      cp "$W/proxy-stats.json" "$1"
      return 0
    fi
    sleep 0.05
  done
  die "the proxy still has requests in flight after 10 s"
}

# ---------------------------------------------------------------------------------------------
# Corpus

make_corpus() {
  log "copying $DATA to $C"
  mkdir -p "$(dirname "$C")"
  cp -a "$DATA" "$C"
  if ((EXTRA_MIB > 0)); then
    log "adding $EXTRA_MIB MiB of random data (extra-random.bin)"
    head -c "$((EXTRA_MIB * 1024 * 1024))" /dev/urandom >"$C/extra-random.bin"
  fi
  CORPUS_FILES=$(find "$C" -type f | wc -l)
  CORPUS_DIRS=$(find "$C" -type d | wc -l)
  CORPUS_LINKS=$(find "$C" -type l | wc -l)
  CORPUS_BYTES=$(find "$C" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
  log "corpus: $CORPUS_FILES files, $CORPUS_DIRS directories, $CORPUS_LINKS symlinks, $CORPUS_BYTES bytes"
}

# Every entry with type, mode, size (files only) and link target, sorted.
listing() {
  (cd "$1" && find . -mindepth 1 \( -type f -printf '%P\t%y\t%m\t%s\n' \) -o \
    \( -printf '%P\t%y\t%m\t%l\n' \)) | LC_ALL=C sort
}

# same_tree SRC DST LOG: exit 0 when DST has the same entries, modes, sizes, link targets and
# file contents as SRC; the differences go to LOG.
same_tree() {
  local src=$1 dst=$2 out=$3
  [[ -d $dst ]] || { echo "missing: $dst" >"$out"; return 1; }
  if ! diff <(listing "$src") <(listing "$dst") >"$out" 2>&1; then return 1; fi
  diff -r --no-dereference "$src" "$dst" >>"$out" 2>&1
}

# ---------------------------------------------------------------------------------------------
# Repositories: one backup per tool (not measured)

coffer_repo() { echo "s3://$COFFER_BUCKET/coffer?endpoint=$PROXY"; }
restic_repo() { echo "s3:$PROXY/$RESTIC_BUCKET/restic"; }

backup_coffer() {
  log "coffer: init and backup (cache $W/cache/coffer)"
  "$COFFER" --repo "$(coffer_repo)" --cache-dir "$W/cache/coffer" init \
    >"$W/logs/coffer.init.out" 2>"$W/logs/coffer.init.err" ||
    { tail -n 20 "$W/logs/coffer.init.err" >&2; die "coffer init failed"; }
  "$COFFER" --repo "$(coffer_repo)" --cache-dir "$W/cache/coffer" --json backup "data=$C" \
    >"$W/logs/coffer.backup.out" 2>"$W/logs/coffer.backup.err" ||
    { tail -n 20 "$W/logs/coffer.backup.err" >&2; die "coffer backup failed"; }
}

backup_restic() {
  log "restic: init and backup (cache $W/cache/restic)"
  create_bucket "$RESTIC_BUCKET"
  "$RESTIC" --repo "$(restic_repo)" --cache-dir "$W/cache/restic" init \
    >"$W/logs/restic.init.out" 2>"$W/logs/restic.init.err" ||
    { tail -n 20 "$W/logs/restic.init.err" >&2; die "restic init failed"; }
  # A relative path, so that the snapshot holds "data" at its top as coffer's does.
  (cd "$(dirname "$C")" && "$RESTIC" --repo "$(restic_repo)" --cache-dir "$W/cache/restic" \
    backup data >"$W/logs/restic.backup.out" 2>"$W/logs/restic.backup.err") ||
    { tail -n 20 "$W/logs/restic.backup.err" >&2; die "restic backup failed"; }
}

# ---------------------------------------------------------------------------------------------
# Restores (measured)

restore_once() { # restore_once TOOL RUN: one restore, its counters, time and check
  local tool=$1 run=$2 target=$W/restore/$1 cache out=$W/logs/$1.restore.$2 t0 t1 same=yes
  if [[ $COLD_CACHE == 1 ]]; then cache=$W/cache/$tool-cold-$run; else cache=$W/cache/$tool; fi
  rm -rf "$target"
  if [[ $COLD_CACHE == 1 ]]; then rm -rf "$cache"; fi
  local cmd
  if [[ $tool == coffer ]]; then
    cmd=("$COFFER" --repo "$(coffer_repo)" --cache-dir "$cache" --json
      restore --snapshot latest --target "$target")
  else
    cmd=("$RESTIC" --repo "$(restic_repo)" --cache-dir "$cache" restore latest --target "$target")
  fi
  snapshot_stats "$out.before.json"
  t0=$EPOCHREALTIME
  "${cmd[@]}" >"$out.out" 2>"$out.err" ||
    { tail -n 20 "$out.err" >&2; die "$tool restore (run $run) failed: ${cmd[*]}"; }
  t1=$EPOCHREALTIME
  snapshot_stats "$out.after.json"
  same_tree "$C" "$target/data" "$out.diff" || same=no
  printf '%s\t%s\t%s\t%s\t%s\n' "$tool" "$run" "$t0" "$t1" "$same" >>"$RAW"
  log "$tool restore #$run: $(python3 -c "print(f'{$t1 - $t0:.2f}')") s, tree identical: $same"
  [[ $same == yes ]] || log "  differences: $out.diff"
  rm -rf "$target"
  if [[ $COLD_CACHE == 1 ]]; then rm -rf "$cache"; fi
}

# ---------------------------------------------------------------------------------------------
# Report

report() {
  python3 - "$W" "$RAW" "$W/logs/meta.json" >"$W/restore-vs-restic.md" <<'PY'
import json, statistics, sys

w, raw, meta_path = sys.argv[1:4]
meta = json.load(open(meta_path))
rows = [l.rstrip("\n").split("\t") for l in open(raw) if l.strip()]

def delta(a, b):
    """Counters of b minus those of a (nested dicts of numbers)."""
    out = {}
    for k, v in b.items():
        if isinstance(v, dict):
            d = delta(a.get(k, {}), v)
            out[k] = {kk: vv for kk, vv in d.items() if vv}
        elif isinstance(v, (int, float)):
            out[k] = v - a.get(k, 0)
    return out

def own_count(path):
    """requests and bytes_fetched from coffer's --json output, at the top or one level down."""
    try:
        text = open(path).read()
    except OSError:
        return None
    doc = None
    for chunk in [text] + text.splitlines()[::-1]:  # one document, else the last JSON line
        try:
            doc = json.loads(chunk)
            break
        except ValueError:
            pass
    for d in [doc] + [v for v in doc.values() if isinstance(v, dict)] if isinstance(doc, dict) else []:
        if "requests" in d and "bytes_fetched" in d:
            return {"requests": d["requests"], "bytes_fetched": d["bytes_fetched"]}
    return None

tools = {}
for tool, run, t0, t1, same in rows:
    base = f"{w}/logs/{tool}.restore.{run}"
    d = delta(json.load(open(base + ".before.json")), json.load(open(base + ".after.json")))
    r = {"run": int(run), "wall_s": round(float(t1) - float(t0), 3), "tree_identical": same == "yes",
         "get_requests": d["by_method"].get("GET", 0), "requests": d["requests"],
         "bytes_sent_by_server": d["bytes_sent"], "bytes_received_by_server": d["bytes_received"],
         "by_method": d["by_method"], "by_kind": d["by_kind"], "by_bucket": d["by_bucket"]}
    if tool == "coffer":
        r["own_count"] = own_count(base + ".out")
    tools.setdefault(tool, []).append(r)

def med(runs, key):
    return statistics.median(r[key] for r in runs)

def spread(runs, key, fmt):
    vals = [r[key] for r in runs]
    m = fmt(statistics.median(vals))
    return m if min(vals) == max(vals) else f"{m} ({fmt(min(vals))}–{fmt(max(vals))})"

summary = {}
for tool, runs in tools.items():
    others = {}
    for r in runs:
        for k, v in r["by_method"].items():
            if k != "GET":
                others.setdefault(k, []).append(v)
    s = {"runs": len(runs), "get_requests_median": med(runs, "get_requests"),
         "requests_median": med(runs, "requests"),
         "bytes_fetched_median": med(runs, "bytes_sent_by_server"),
         "wall_s_median": med(runs, "wall_s"),
         "tree_identical": all(r["tree_identical"] for r in runs),
         "other_requests_median": {k: statistics.median(v + [0] * (len(runs) - len(v)))
                                   for k, v in sorted(others.items())}}
    if tool == "coffer":
        own = [r["own_count"] for r in runs if r.get("own_count")]
        s["own_count"] = own[len(own) // 2] if own else None
    summary[tool] = s

json.dump({"meta": meta, "summary": summary, "runs": tools},
          open(f"{w}/restore-vs-restic.json", "w"), indent=2)

m = meta
out = []
p = out.append
p("# Restore from S3: coffer vs restic\n")
p(f"- date: {m['date']}; machine: {m['cores']} cores, load average at start {m['load']}")
extra = f" + {m['extra_mib']} MiB random file" if m["extra_mib"] else ""
p(f"- corpus: copy of {m['data']}{extra}: {m['corpus_files']:,} files, "
  f"{m['corpus_bytes']:,} bytes ({m['corpus_bytes'] / 1e6:,.1f} MB), "
  f"{m['corpus_dirs']:,} directories, {m['corpus_links']:,} symlinks")
p(f"- work dir: {m['work_dir']} (filesystem {m['fs_type']})")
p(f"- S3: {m['moto']} on 127.0.0.1 behind a counting proxy (python3 http.server); "
  "both tools talk to the proxy")
p(f"- cache mode: {m['cache_mode']}")
p(f"- coffer: {m['coffer_version']} ({m['coffer_bin']}, checkout {m['coffer_git']})")
p(f"- restic: {m['restic_version']}")
p(f"- runs: {m['runs']} per tool, interleaved; wall = median; request and byte counts are "
  "medians, with (min–max) when the runs differ; MB = 10^6 bytes\n")
own_col = any(summary[t].get("own_count") for t in summary)
head = ["tool", "GET requests", "bytes fetched (MB)", "restore wall s (median)", "runs",
        "tree identical", "other requests"]
if own_col:
    head.append("coffer's own count")
p("| " + " | ".join(head) + " |")
p("|" + "|".join("---" if i in (0, 5, 6) else "---:" for i in range(len(head))) + "|")
for tool in [t for t in ("coffer", "restic") if t in tools]:
    runs, s = tools[tool], summary[tool]
    other = ", ".join(f"{k} {v:g}" for k, v in s["other_requests_median"].items()) or "-"
    cells = [tool, spread(runs, "get_requests", lambda v: f"{v:g}"),
             spread(runs, "bytes_sent_by_server", lambda v: f"{v / 1e6:,.2f}"),
             f"{s['wall_s_median']:.2f}", str(s["runs"]),
             "yes" if s["tree_identical"] else "**no**", other]
    if own_col:
        o = s.get("own_count") if tool == "coffer" else None
        cells.append(f"{o['requests']} requests, {o['bytes_fetched'] / 1e6:,.2f} MB" if o else "")
    p("| " + " | ".join(cells) + " |")
p("")
for tool in [t for t in ("coffer", "restic") if t in tools]:
    kinds = {}
    for r in tools[tool]:
        for k, v in r["by_kind"].items():
            kinds.setdefault(k, []).append(v)
    n = len(tools[tool])
    p(f"- {tool} requests by kind (median): " + ", ".join(
        f"{k} {statistics.median(v + [0] * (n - len(v))):g}" for k, v in sorted(kinds.items())))
if "coffer" in tools and not own_col:
    p("- coffer's restore --json has no `requests`/`bytes_fetched` fields (in this binary)")
elif own_col:
    p("- coffer's own count: `requests` and `bytes_fetched` of its restore --json (reads of "
      "file content, as coffer counts them)")
print("\n".join(out))
PY
  cat "$W/restore-vs-restic.md"
}

write_meta() { # the header of the report, as key=value pairs (numbers stay numbers)
  local coffer_version="-" restic_version="-" coffer_git
  if uses coffer; then coffer_version=$("$COFFER" --version 2>/dev/null | head -n1); fi
  if uses restic; then restic_version=$("$RESTIC" version | head -n1); fi
  coffer_git=$(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo unknown)
  python3 - "$W/logs/meta.json" \
    "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)" "cores=$(nproc)" "load=$(cut -d' ' -f1-3 /proc/loadavg)" \
    "data=$DATA" "extra_mib=$EXTRA_MIB" "corpus_files=$CORPUS_FILES" "corpus_dirs=$CORPUS_DIRS" \
    "corpus_links=$CORPUS_LINKS" "corpus_bytes=$CORPUS_BYTES" "work_dir=$W" \
    "fs_type=$(stat -f -c %T "$W")" "moto=$(moto_version)" "cache_mode=$CACHE_MODE" \
    "coffer_bin=$COFFER" "coffer_version=$coffer_version" "coffer_git=$coffer_git" \
    "restic_version=$restic_version" "runs=$RUNS" "tools=$TOOLS" <<'PY'
import json, sys
meta = {}
for arg in sys.argv[2:]:
    k, _, v = arg.partition("=")
    meta[k] = int(v) if v.isdigit() else v
json.dump(meta, open(sys.argv[1], "w"), indent=2)
PY
}

# ---------------------------------------------------------------------------------------------
# Run

check_tools
mkdir -p "$W"
W=$(cd "$W" && pwd)
C=$W/corpus/data
RAW=$W/logs/runs.tsv
rm -rf "$W/corpus" "$W/restore" "$W/cache" "$W/s3" "$W/logs" "$W/restore-vs-restic.json" \
  "$W/restore-vs-restic.md"
mkdir -p "$W/logs" "$W/restore" "$W/cache" "$W/s3"
: >"$RAW"
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ $COLD_CACHE == 1 ]]; then
  CACHE_MODE="cold: a fresh empty --cache-dir for every restore, both tools (restic without --no-cache)"
else
  CACHE_MODE="warm: each tool restores with the --cache-dir its backup left (coffer: catalog; restic: index, snapshots)"
fi
log "work directory $W ($(stat -f -c %T "$W")), RUNS=$RUNS, cache ${CACHE_MODE%%:*}"

make_corpus
start_s3
start_proxy
export COFFER_PASSWORD=$PASS RESTIC_PASSWORD=$PASS
for tool in $TOOLS; do "backup_$tool"; done
write_meta

log "restores: $RUNS per tool ($TOOLS), interleaved"
for run in $(seq "$RUNS"); do
  for tool in $TOOLS; do
    restore_once "$tool" "$run"
  done
done

report
log "results in $W/restore-vs-restic.json and $W/restore-vs-restic.md"
