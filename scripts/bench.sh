#!/usr/bin/env bash
# coffer against restic on one corpus, end to end (issue 7). Documented in docs/performance.md.
#
#   scripts/bench.sh                                   # small corpus (about 200 MiB)
#   BENCH_SIZE=full BENCH_DIR=/srv/bench scripts/bench.sh
#   BENCH_SIZE=mix scripts/bench.sh                    # real files, PostgreSQL, media (issue 18)
#
# Environment:
#   BENCH_SIZE        small (about 200 MiB) | full (about 1.5 GiB) | mix (about 1.4 GiB: a copy
#                     of /usr/share/doc and ~/.cargo/registry/src, a pgbench cluster, media);
#                     default small
#   BENCH_DIR         work directory: corpus, repositories, restores, logs, results.md;
#                     default /var/tmp/coffer-bench-$BENCH_SIZE (on disk; wiped at the start of
#                     a run). The report names its file system. On tmpfs (/dev/shm/...) the
#                     disk is out of the measurement; that needs about 8 x the corpus in memory.
#   BENCH_MIX_SMALL_MB  mix: cap of the real small files copied (0: all, about 600 MiB);
#                     default 0
#   BENCH_MIX_MEDIA_MB  mix: random media files of 8-64 MiB, in MiB; default 256
#   BENCH_PG_SCALE    mix: pgbench -i -s (20: about 300 MB); default 20
#   BENCH_PG_SECONDS  mix: pgbench -T before the next night; default 10
#   BENCH_PG_BIN      mix: PostgreSQL server binaries; default the newest /usr/lib/postgresql/*/bin.
#                     Without initdb, pg_ctl and pgbench the db source is synthetic 8 KiB pages.
#   BENCH_RUNS        runs per step, the median is reported; default 3 (at least 3 for the
#                     numbers to mean anything)
#   BENCH_SEED        seed of the generated data and of the next-night changes; default 1
#   BENCH_SETTLE_SECONDS  pause after removing a step's restores (freed inodes age); default 0
#                     as root (the caches are dropped before every restore), 65 otherwise. See
#                     fresh_restore: a pause under 360 s removes only part of the effect.
#   BENCH_RESTORE_FS  dir: every restore run into a new directory of BENCH_DIR's file system
#                     (the default); loop: onto a new ext4 of its own (mkfs.ext4 on an image
#                     file in BENCH_DIR, loop-mounted; root only), so that no run pays for the
#                     inodes an earlier one freed (see fresh_restore), as a restore into a new
#                     volume. The image is made with the features of mke2fs's defaults,
#                     without a journal as this machine kind's disk, and before the clock starts.
#   BENCH_SKIP_BUILD  1: use the existing target/release/coffer
#   COFFER_BIN        coffer binary (default: target/release/coffer of this checkout)
#   RESTIC            restic binary (default: restic on PATH; installed from Debian if missing)
#
# Each step runs under /usr/bin/time (wall, user+sys CPU, max RSS); the "bytes" of a backup
# step are what the repository grew by (du -sb before and after). coffer and restic runs are
# interleaved so that other load on the machine hits both alike. Both encrypt; each uses its
# default compression (coffer: zstd level 3, restic: --compression auto).
#
# Floors, measured in the same run: the initial backup against `tar -cf - | zstd -3 -T2`
# (reading and compressing on both cores), the restores against a single-threaded `tar -x` of an
# uncompressed tar of the same tree (written once, outside the measurement) onto the same disk,
# and against `tar -xzf` of a gzip tar of it (gunzip in its own process: the floor issue 18
# measured; the uncompressed one is the stricter).
# Every restore run, of every tool, starts after `sync` into a new directory; the restores of a
# step are kept until it ends (3 x BENCH_RUNS copies of the corpus on disk at most).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_SIZE=${BENCH_SIZE:-small}
BENCH_DIR=${BENCH_DIR:-/var/tmp/coffer-bench-$BENCH_SIZE}
BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_SEED=${BENCH_SEED:-1}
COFFER=${COFFER_BIN:-$ROOT/target/release/coffer}
RESTIC=${RESTIC:-restic}
W=$BENCH_DIR
C=$W/corpus
RAW=$W/raw.tsv
META=$W/meta.tsv
BENCH_MIX_SMALL_MB=${BENCH_MIX_SMALL_MB:-0}
BENCH_MIX_MEDIA_MB=${BENCH_MIX_MEDIA_MB:-256}
BENCH_PG_SCALE=${BENCH_PG_SCALE:-20}
BENCH_RESTORE_FS=${BENCH_RESTORE_FS:-dir}
case $BENCH_RESTORE_FS in
  dir) ;;
  loop) [[ $(id -u) == 0 ]] || { echo "BENCH_RESTORE_FS=loop needs root (mount)" >&2; exit 1; } ;;
  *) echo "BENCH_RESTORE_FS must be dir or loop" >&2; exit 1 ;;
esac
BENCH_PG_SECONDS=${BENCH_PG_SECONDS:-10}
BENCH_PG_PORT=${BENCH_PG_PORT:-54329}
if [[ $BENCH_SIZE == mix ]]; then
  SOURCES=(workspace db media)
  PART=workspace # the source of the "restore of one source" step
else
  SOURCES=(src large db media)
  PART=src
fi
PASS=bench-passphrase

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

case $BENCH_SIZE in small | full | mix) ;; *) die "BENCH_SIZE must be small, full or mix" ;; esac
[[ $BENCH_RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"
for v in BENCH_MIX_SMALL_MB BENCH_MIX_MEDIA_MB BENCH_PG_SCALE BENCH_PG_SECONDS BENCH_PG_PORT; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer"
done
command -v zstd >/dev/null || die "zstd is needed (the backup floor; apt-get install -y zstd)"
command -v python3 >/dev/null || die "python3 is needed (corpus generator and report)"
[[ -x /usr/bin/time ]] || die "/usr/bin/time is needed (apt-get install -y time)"

# ---------------------------------------------------------------------------------------------
# Tools

if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
  log "building coffer (release)"
  (cd "$ROOT" && cargo build --release --quiet)
fi
[[ -x $COFFER ]] || die "no coffer binary at $COFFER"

if ! command -v "$RESTIC" >/dev/null; then
  log "installing restic from the Debian packages"
  sudo=()
  [[ $(id -u) == 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get install -y restic >/dev/null ||
    { "${sudo[@]}" apt-get update >/dev/null && "${sudo[@]}" apt-get install -y restic >/dev/null; } ||
    die "could not install restic"
fi
RESTIC=$(command -v "$RESTIC")

export COFFER_PASSWORD=$PASS RESTIC_PASSWORD=$PASS
# Output goes to log files, not a terminal: no progress bars; restic's status lines rarely.
export RESTIC_PROGRESS_FPS=0.1

coffer() { # coffer ID ARGS...: the coffer command line for repository ID
  local id=$1
  shift
  CMD=("$COFFER" --repo "$W/repo/coffer-$id" --cache-dir "$W/cache/coffer-$id" "$@")
}
restic() { # restic ID ARGS...: the restic command line for repository ID
  local id=$1
  shift
  CMD=("$RESTIC" --repo "$W/repo/restic-$id" --cache-dir "$W/cache/restic-$id" "$@")
}

# ---------------------------------------------------------------------------------------------
# Measurement

size_of() { # bytes of a file or directory tree (apparent size), 0 when missing
  if [[ -e $1 ]]; then du -sb "$1" | cut -f1; else echo 0; fi
}

# measure STEP TOOL RUN BYTES_PATH: run "${CMD[@]}" under /usr/bin/time and append a row to
# raw.tsv; the bytes column is how much BYTES_PATH grew ("" for none).
measure() {
  local step=$1 tool=$2 run=$3 path=$4 before=0 after=0 out="$W/logs/$1.$2.$3"
  if [[ -n $path ]]; then before=$(size_of "$path"); fi
  if ! /usr/bin/time -f '%e %U %S %M' -o "$out.time" "${CMD[@]}" >"$out.out" 2>"$out.err"; then
    tail -n 20 "$out.err" >&2
    die "$step ($tool, run $run) failed: ${CMD[*]}"
  fi
  if [[ -n $path ]]; then after=$(size_of "$path"); fi
  local wall user sys rss
  read -r wall user sys rss < <(tail -n 1 "$out.time")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$step" "$tool" "$run" "$wall" \
    "$(python3 -c "print(round($user + $sys, 2))")" "$rss" "$((after - before))" >>"$RAW"
  log "$step $tool #$run: ${wall}s wall, ${rss} KiB peak RSS, $((after - before)) bytes"
}

meta() { printf '%s\t%s\n' "$1" "$2" >>"$META"; }

warm() { # read the corpus so that every step finds it in the page cache
  find "$C" -type f -print0 | xargs -0 cat >/dev/null
}

# ---------------------------------------------------------------------------------------------
# Corpus: real small files, real binaries, a database of 8 KiB pages, random media.

# gen_corpus [PARTS]: PARTS (comma-separated, default all: src,large,db,media) of the generated
# corpus; mix uses only db, as the fallback when PostgreSQL is missing (about pgbench's size).
gen_corpus() {
  python3 - "$C" "$BENCH_SIZE" "$BENCH_SEED" "${1:-src,large,db,media}" "$BENCH_PG_SCALE" <<'PY'
import os, random, re, shutil, struct, sys

out, size, seed, parts = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split(",")
MiB = 1 << 20
P = {
    "small": dict(src_files=12_000, src_bytes=96 * MiB, large=[32 * MiB, 16 * MiB],
                  db_bytes=32 * MiB, db_seg=16 * MiB, media=[8 * MiB] * 4),
    "full": dict(src_files=60_000, src_bytes=640 * MiB, large=[128 * MiB] * 4,
                 db_bytes=384 * MiB, db_seg=64 * MiB, media=[32 * MiB] * 8),
    "mix": dict(db_bytes=max(1, int(sys.argv[5])) * 16 * MiB, db_seg=16 * MiB),
}[size]
home = os.path.expanduser("~")

def walk(root, min_size=1, max_size=None):
    """Regular files under root in a stable order, each inode once."""
    seen = set()
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(d, f)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if not os.path.isfile(p) or os.path.islink(p) or (st.st_dev, st.st_ino) in seen:
                continue
            if st.st_size < min_size or (max_size and st.st_size > max_size):
                continue
            if not os.access(p, os.R_OK):
                continue
            seen.add((st.st_dev, st.st_ino))
            yield p, st.st_size

# Small files: round-robin over real source and documentation trees.
roots = [("cargo", f"{home}/.cargo/registry/src"), ("include", "/usr/include"),
         ("man", "/usr/share/man"), ("doc", "/usr/share/doc"),
         ("rustup", f"{home}/.rustup/toolchains")]
gens = [(name, root, walk(root, 1, 64 * 1024)) for name, root in roots if os.path.isdir(root)]
if "src" not in parts:
    gens = []
files = nbytes = 0
while gens and files < P["src_files"] and nbytes < P["src_bytes"]:
    for g in list(gens):
        name, root, it = g
        try:
            p, n = next(it)
        except StopIteration:
            gens.remove(g)
            continue
        dst = os.path.join(out, "src", name, os.path.relpath(p, root))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        try:
            shutil.copyfile(p, dst)
        except OSError:
            continue
        files += 1
        nbytes += n
if "src" in parts:
    print(f"src: {files} files, {nbytes / MiB:.1f} MiB", file=sys.stderr)

# Large binaries: real libraries and executables concatenated, each source file used once.
if "large" in parts:
    os.makedirs(os.path.join(out, "large"), exist_ok=True)
def binaries():
    while True:
        for root in ("/usr/lib", "/usr/libexec", "/usr/bin", f"{home}/.rustup/toolchains"):
            if os.path.isdir(root):
                yield from walk(root, 64 * 1024)
        print("large: ran out of distinct binaries, reusing them", file=sys.stderr)
bins = binaries()
for i, want in enumerate(P["large"] if "large" in parts else []):
    with open(os.path.join(out, "large", f"image-{i}.bin"), "wb") as f:
        left = want
        while left:
            p, _ = next(bins)
            try:
                with open(p, "rb") as src:
                    data = src.read(left)
            except OSError:
                continue
            f.write(data)
            left -= len(data)

# Database: segment files of 8 KiB pages, records of words and numbers, free space zeroed.
rng = random.Random(seed)
# A vocabulary from the documentation copied above (deterministic: walk order).
vocab = set()
for d, dirs, fs in os.walk(os.path.join(out, "src" if "src" in parts else "workspace")):
    dirs.sort()
    for f in sorted(fs):
        with open(os.path.join(d, f), "rb") as fh:
            vocab.update(re.findall(rb"[A-Za-z]{3,14}", fh.read(65536)))
    if len(vocab) > 20_000:
        break
words = sorted(w.decode() for w in vocab) or ["order", "customer", "invoice", "paid"]
pool = []
for _ in range(65536):
    text = " ".join(rng.choice(words) for _ in range(rng.randint(2, 12))).encode()
    pool.append(struct.pack("<IIdH", rng.getrandbits(32), rng.getrandbits(16),
                            rng.random() * 1e4, len(text)) + text)

def page(lsn):
    buf = bytearray(8192)
    upper, items, fill = 8192, [], rng.uniform(0.55, 0.95)
    while upper > 8192 * (1 - fill) + 64:
        rec = struct.pack("<Q", rng.getrandbits(48)) + pool[rng.getrandbits(16)]
        if upper - len(rec) < 24 + 4 * (len(items) + 1):
            break
        upper -= len(rec)
        buf[upper:upper + len(rec)] = rec
        items.append(upper)
    lower = 24 + 4 * len(items)
    buf[0:24] = struct.pack("<QIHHHHI", lsn, rng.getrandbits(32), lower, upper, 8192, 4, 0)
    for k, off in enumerate(items):
        buf[24 + 4 * k:28 + 4 * k] = struct.pack("<I", off)
    return bytes(buf)

os.makedirs(os.path.join(out, "db"), exist_ok=True)
pages_per_seg = P["db_seg"] // 8192
for s in range(P["db_bytes"] // P["db_seg"] if "db" in parts else 0):
    with open(os.path.join(out, "db", f"segment.{s:03}"), "wb") as f:
        f.write(b"".join(page(1) for _ in range(pages_per_seg)))

# Media: incompressible.
if "media" in parts:
    os.makedirs(os.path.join(out, "media"), exist_ok=True)
mrng = random.Random(seed + 1)
for i, n in enumerate(P["media"] if "media" in parts else []):
    with open(os.path.join(out, "media", f"clip-{i}.mp4"), "wb") as f:
        for _ in range(n // MiB):
            f.write(mrng.randbytes(MiB))
PY
}

# The next night: 3 % of the database pages rewritten at random and 1 % appended, 0.5 % of the
# small files edited, one new media file. mix (synthetic db only): the database pages alone.
next_night() {
  python3 - "$C" "$BENCH_SIZE" "$BENCH_SEED" <<'PY'
import os, random, struct, sys

out, size, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(seed + 100)
db = os.path.join(out, "db")
segs = sorted(os.listdir(db))
pages = [(s, i) for s in segs for i in range(os.path.getsize(os.path.join(db, s)) // 8192)]
changed = rng.sample(pages, len(pages) * 3 // 100)
def page():
    n = rng.randint(4000, 7800)
    body = " ".join(str(rng.getrandbits(40)) for _ in range(n // 8)).encode()[:n]
    return (struct.pack("<QI", 2, rng.getrandbits(32)) + body).ljust(8192, b"\0")
by_seg = {}
for s, i in changed:
    by_seg.setdefault(s, []).append(i)
for s, idx in by_seg.items():
    with open(os.path.join(db, s), "r+b") as f:
        for i in sorted(idx):
            f.seek(i * 8192)
            f.write(page())
with open(os.path.join(db, segs[-1]), "ab") as f:
    for _ in range(len(pages) // 100):
        f.write(page())
if size == "mix":
    print(f"next night: {len(changed)} of {len(pages)} pages rewritten, {len(pages) // 100} "
          "appended", file=sys.stderr)
    sys.exit(0)
small = []
for d, dirs, files in os.walk(os.path.join(out, "src")):
    dirs.sort()
    small += [os.path.join(d, f) for f in sorted(files)]
for p in rng.sample(small, max(1, len(small) // 200)):
    with open(p, "ab") as f:
        f.write(b"\n# edited the next night\n")
n = (4 if size == "small" else 16) << 20
with open(os.path.join(out, "media", "clip-new.mp4"), "wb") as f:
    f.write(rng.randbytes(n))
print(f"next night: {len(changed)} of {len(pages)} pages rewritten, {len(pages) // 100} "
      f"appended, {max(1, len(small) // 200)} small files edited, {n >> 20} MiB new media",
      file=sys.stderr)
PY
}

# ---------------------------------------------------------------------------------------------
# The mix corpus (issue 18): real small files, a PostgreSQL cluster filled by pgbench, media.

fs_kind() { # the file system of $1, and whether the disk is in the measurement
  local t
  t=$(df --output=fstype "$1" 2>/dev/null | tail -n 1) || t=
  [[ -n $t ]] || t=$(stat -f -c %T "$1")
  case $t in
    tmpfs | ramfs) echo "$t (memory: the disk is out of the measurement)" ;;
    *) echo "$t (disk)" ;;
  esac
}

PG_BIN=${BENCH_PG_BIN:-$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)}
PG_AS=()         # run the server's commands as this user (initdb refuses root)
PG_MISSING=""    # why the db source is synthetic, empty when PostgreSQL is used
PG_RUNNING=0
if [[ $BENCH_SIZE == mix ]]; then
  for b in initdb pg_ctl pgbench; do
    [[ -x $PG_BIN/$b ]] || PG_MISSING="no $PG_BIN/$b"
  done
  if [[ -z $PG_MISSING && $(id -u) == 0 ]]; then
    if id -u postgres >/dev/null 2>&1; then PG_AS=(runuser -u postgres --); else
      PG_MISSING="run as root and there is no postgres user for initdb"
    fi
  fi
fi

pg() { # pg PROGRAM ARGS...: a PostgreSQL program as the server's user, from the work directory
  local prog=$1
  shift
  (cd "$W" && "${PG_AS[@]}" "$PG_BIN/$prog" "$@")
}
pg_start() {
  pg pg_ctl -D "$C/db" -l "$W/pg/server.log" -w \
    -o "-k $W/pg -p $BENCH_PG_PORT -c listen_addresses=''" start >>"$W/logs/pg.out"
  PG_RUNNING=1
}
pg_stop() { # a clean shutdown (checkpoint), so that the data directory is consistent at rest
  pg pg_ctl -D "$C/db" -m fast -w stop >>"$W/logs/pg.out"
  PG_RUNNING=0
}
run_pgbench() { pg pgbench -h "$W/pg" -p "$BENCH_PG_PORT" "$@" postgres >>"$W/logs/pg.out" 2>&1; }
trap '[[ $PG_RUNNING == 0 ]] || pg_stop' EXIT

gen_mix() {
  mkdir -p "$C"
  python3 "$ROOT/scripts/bench-corpus.py" workspace "$C/workspace" "$BENCH_MIX_SMALL_MB"
  if [[ -z $PG_MISSING ]]; then
    log "PostgreSQL: initdb, pgbench -i -s $BENCH_PG_SCALE"
    mkdir -p "$C/db" "$W/pg"
    chmod 700 "$C/db"
    chmod a+rx "$W" "$C"
    if [[ ${#PG_AS[@]} -gt 0 ]]; then chown postgres: "$C/db" "$W/pg"; fi
    pg initdb -D "$C/db" -A trust >>"$W/logs/pg.out"
    pg_start
    run_pgbench -i -q -s "$BENCH_PG_SCALE"
    pg_stop
    meta db "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'), \`pgbench -i -s $BENCH_PG_SCALE\`, server stopped cleanly before each backup"
  else
    log "PostgreSQL is missing ($PG_MISSING): synthetic 8 KiB pages for db"
    gen_corpus db
    meta db "synthetic 8 KiB pages of the small/full generator, PostgreSQL missing: $PG_MISSING"
  fi
  python3 "$ROOT/scripts/bench-corpus.py" media "$C/media" "$BENCH_MIX_MEDIA_MB" "$BENCH_SEED"
}

next_night_mix() {
  if [[ -z $PG_MISSING ]]; then
    log "PostgreSQL: pgbench -T $BENCH_PG_SECONDS"
    pg_start
    run_pgbench -T "$BENCH_PG_SECONDS"
    pg_stop
    meta night "\`pgbench -T $BENCH_PG_SECONDS\` (server started and stopped cleanly), a line appended to 1 % of the workspace files, 20 new files"
  else
    next_night
    meta night "3 % of the synthetic pages rewritten and 1 % appended, a line appended to 1 % of the workspace files, 20 new files"
  fi
  python3 "$ROOT/scripts/bench-corpus.py" night "$C/workspace" "$BENCH_SEED"
}

# ---------------------------------------------------------------------------------------------
# Run

log "work directory $W (BENCH_SIZE=$BENCH_SIZE, BENCH_RUNS=$BENCH_RUNS)"
rm -rf "$W"
mkdir -p "$W/logs" "$W/repo" "$W/cache" "$W/restore"
: >"$RAW"
: >"$META"
meta size "$BENCH_SIZE"
meta sources "${SOURCES[*]}"
meta part "$PART"
meta fs "$(fs_kind "$W")"
meta restore_fs "$BENCH_RESTORE_FS"
meta runs "$BENCH_RUNS"
meta date "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
meta cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
meta cores "$(nproc)"
meta cpu_id "$(awk -F': ' '/^cpu family/ {f=$2} /^model\t/ {m=$2} END {print "family " f " model " m}' /proc/cpuinfo)"
meta memory "$(free -g | awk '/^Mem:/ {print $2 " GiB"}')"
meta kernel "$(uname -r)"
meta load_start "$(cut -d' ' -f1-3 /proc/loadavg)"
meta coffer "$(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo unknown)"
meta restic "$("$RESTIC" version | head -n1)"

log "generating the corpus"
if [[ $BENCH_SIZE == mix ]]; then gen_mix; else gen_corpus; fi
meta corpus_bytes "$(size_of "$C")"
meta corpus_files "$(find "$C" -type f | wc -l)"
for s in "${SOURCES[@]}"; do meta "corpus_$s" "$(size_of "$C/$s")"; done

COFFER_SOURCES=()
RESTIC_SOURCES=()
for s in "${SOURCES[@]}"; do
  COFFER_SOURCES+=("$s=$C/$s")
  RESTIC_SOURCES+=("$C/$s")
done

warm
# shellcheck disable=SC2016 # $1 is bash -c's argument
CMD=(bash -c 'find "$1" -type f -print0 | xargs -0 cat >/dev/null' _ "$C")
measure read-corpus cat 1 ""

log "initial backup (a fresh repository per run)"
for r in $(seq "$BENCH_RUNS"); do
  coffer "$r" init
  "${CMD[@]}" >/dev/null
  coffer "$r" --json backup "${COFFER_SOURCES[@]}"
  measure initial coffer "$r" "$W/repo/coffer-$r"
  restic "$r" init
  "${CMD[@]}" >/dev/null 2>&1
  restic "$r" backup --compression auto "${RESTIC_SOURCES[@]}"
  measure initial restic "$r" "$W/repo/restic-$r"
  # shellcheck disable=SC2016 # $1 is bash -c's argument
  CMD=(bash -c 'tar -cf - -C "$1" "${@:2}" | zstd -3 -T2 -q >/dev/null' _ "$C" "${SOURCES[@]}")
  measure initial floor "$r" ""
done
meta repo_coffer "$(size_of "$W/repo/coffer-1")"
meta repo_restic "$(size_of "$W/repo/restic-1")"

log "no-change backup"
for r in $(seq "$BENCH_RUNS"); do
  coffer "$r" --json backup "${COFFER_SOURCES[@]}"
  measure no-change coffer "$r" "$W/repo/coffer-$r"
  restic "$r" backup --compression auto "${RESTIC_SOURCES[@]}"
  measure no-change restic "$r" "$W/repo/restic-$r"
done

log "snapshots (key derivation and listing: the floor under every command)"
for r in $(seq "$BENCH_RUNS"); do
  coffer "$r" snapshots
  measure snapshots coffer "$r" ""
  restic "$r" snapshots
  measure snapshots restic "$r" ""
done

log "next night"
if [[ $BENCH_SIZE == mix ]]; then next_night_mix; else next_night; fi
meta corpus_bytes_next "$(size_of "$C")"
warm
for r in $(seq "$BENCH_RUNS"); do
  coffer "$r" --json backup "${COFFER_SOURCES[@]}"
  measure next-night coffer "$r" "$W/repo/coffer-$r"
  restic "$r" backup --compression auto "${RESTIC_SOURCES[@]}"
  measure next-night restic "$r" "$W/repo/restic-$r"
done

# The restore floor: a single-threaded tar -x of an uncompressed tar of the same tree, written
# once here, outside the measurement.
log "writing the floors' tars"
tar -cf "$W/floor.tar" -C "$C" "${SOURCES[@]}"
gzip -c "$W/floor.tar" >"$W/floor.tar.gz"

# fresh_restore TOOL STEP RUN: a new, empty target directory for each run ($DEST), with the
# writeback of the previous run done (sync) so that it does not land on this one. Nothing is
# deleted between the runs of a step: on ext4 without a journal (this machine kind's disk), an
# inode freed less than 60 s earlier (300 s while its inode table block is not written back) is
# skipped when a new one is allocated, as long as that block is cached (recently_deleted() in
# fs/ext4/ialloc.c), each allocation scanning past all of them: a restore right after `rm -rf`
# of the previous one pays for every inode it freed. Measured with that pattern (57,274 files):
# `tar -x` took 0.82 s of system time on a fresh disk, then 9.9 and 12.5 s, and still 8.2 and
# 12.7 s with `sync` and 65 s between the removal and the next run. The restores of a step are
# removed after it (forget_restores). As root, the kernel's caches are dropped before each run
# and what the tool reads (its repository, the floor's tar) is read back, so every tool starts
# from the same page cache. Dropping the caches shortens the effect without ending it: only
# cached inode table blocks count, but creating an inode reads its block and dirties it, and a
# dirty block's freed inodes count for 300 s more. In runs right after `rm -rf` of 57,274 files
# and a drop of the caches, find_get_block_common (the lookup of recently_deleted) still took
# 7.7 % of the CPU samples of `tar -x` and 7.7 to 9.2 % of coffer's: a tax on every tool alike.
fresh_restore() {
  DEST=$W/restore/$2-$1-$3
  mkdir -p "$DEST"
  if [[ $BENCH_RESTORE_FS == loop ]]; then
    # Sparse, twice the corpus and 1 GiB more; inode tables written now, not by the kernel's
    # lazy init thread during the measurement.
    truncate -s $(($(du -sb "$C" | cut -f1) * 2 + (1 << 30))) "$DEST.img"
    mkfs.ext4 -q -F -O ^has_journal -E lazy_itable_init=0,nodiscard "$DEST.img"
    mount -o loop "$DEST.img" "$DEST"
  fi
  sync
  if [[ -w /proc/sys/vm/drop_caches ]]; then
    echo 3 >/proc/sys/vm/drop_caches
    case $1 in
      coffer) find "$W/repo/coffer-1" "$W/cache/coffer-1" -type f -print0 | xargs -0 cat >/dev/null ;;
      restic) find "$W/repo/restic-1" "$W/cache/restic-1" -type f -print0 | xargs -0 cat >/dev/null ;;
      floor) cat "$W/floor.tar" >/dev/null ;;
      floor-gz) cat "$W/floor.tar.gz" >/dev/null ;;
    esac
  fi
}
forget_restores() { # remove the restores of a step, then let their inodes age (see above)
  if [[ $BENCH_RESTORE_FS == loop && -d $W/restore ]]; then
    local m
    for m in "$W"/restore/*/; do
      if mountpoint -q "$m"; then umount "$m"; fi
    done
  fi
  rm -rf "$W/restore"
  sync
  local settle=65
  [[ -w /proc/sys/vm/drop_caches ]] && settle=0
  sleep "${BENCH_SETTLE_SECONDS:-$settle}"
}

forget_restores
log "full restore"
for r in $(seq "$BENCH_RUNS"); do
  for tool in coffer restic floor floor-gz; do
    fresh_restore "$tool" full "$r"
    case $tool in
      coffer) coffer 1 --json restore --snapshot latest --target "$DEST" ;;
      restic) restic 1 restore latest --target "$DEST" ;;
      floor) CMD=(tar -xf "$W/floor.tar" -C "$DEST") ;;
      floor-gz) CMD=(tar -xzf "$W/floor.tar.gz" -C "$DEST") ;;
    esac
    measure restore-full "$tool" "$r" "$DEST"
  done
done
# The restores must be the corpus, byte for byte.
for s in "${SOURCES[@]}"; do
  diff -r "$C/$s" "$W/restore/full-coffer-1/$s" >/dev/null || die "coffer's restore of $s differs"
  diff -r "$C/$s" "$W/restore/full-restic-1$C/$s" >/dev/null || die "restic's restore of $s differs"
done
meta restore_verified yes
forget_restores

log "restore of one source ($PART)"
for r in $(seq "$BENCH_RUNS"); do
  for tool in coffer restic floor floor-gz; do
    fresh_restore "$tool" path "$r"
    case $tool in
      coffer) coffer 1 --json restore --snapshot latest --target "$DEST" --path "$PART/" ;;
      restic) restic 1 restore latest --target "$DEST" --include "$C/$PART" ;;
      floor) CMD=(tar -xf "$W/floor.tar" -C "$DEST" "$PART") ;;
      floor-gz) CMD=(tar -xzf "$W/floor.tar.gz" -C "$DEST" "$PART") ;;
    esac
    measure restore-path "$tool" "$r" "$DEST"
  done
done
diff -r "$C/$PART" "$W/restore/path-coffer-1/$PART" >/dev/null || die "coffer's restore of $PART differs"
diff -r "$C/$PART" "$W/restore/path-restic-1$C/$PART" >/dev/null || die "restic's restore of $PART differs"
meta restore_path_verified yes
forget_restores
rm -f "$W/floor.tar" "$W/floor.tar.gz"

log "check --read-data"
for r in $(seq "$BENCH_RUNS"); do
  # Each repository read into the page cache first: coffer drops the pages of the packs it
  # wrote (fadvise after their fsync), restic does not.
  find "$W/repo/coffer-1" -type f -print0 | xargs -0 cat >/dev/null
  coffer 1 --json check --read-data
  measure check coffer "$r" ""
  find "$W/repo/restic-1" -type f -print0 | xargs -0 cat >/dev/null
  restic 1 check --read-data
  measure check restic "$r" ""
done

log "export against tar czf"
for r in $(seq "$BENCH_RUNS"); do
  rm -f "$W/export.tar.gz" "$W/tar.tar.gz"
  coffer 1 export --snapshot latest --output "$W/export.tar.gz"
  measure export coffer "$r" "$W/export.tar.gz"
  CMD=(tar czf "$W/tar.tar.gz" -C "$C" "${SOURCES[@]}")
  measure export tar "$r" "$W/tar.tar.gz"
done
rm -f "$W/export.tar.gz" "$W/tar.tar.gz"
meta load_end "$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------------------------------------
# Report

python3 - "$RAW" "$META" "$ROOT/target/criterion" >"$W/results.md" <<'PY'
import json, os, statistics, sys

raw, meta_path, crit = sys.argv[1:4]
meta = dict(l.rstrip("\n").split("\t", 1) for l in open(meta_path) if "\t" in l)
rows = [l.rstrip("\n").split("\t") for l in open(raw) if l.strip()]
MiB = 1 << 20

def med(step, tool, col):
    v = [float(r[col]) for r in rows if r[0] == step and r[1] == tool]
    return statistics.median(v) if v else None

def fmt_bytes(b):
    if b is None:
        return "-"
    return f"{b / MiB:,.1f} MiB" if abs(b) >= MiB else f"{b / 1024:,.1f} KiB"

def ratio(a, b, digits=2):
    return f"{a / b:.{digits}f}" if a is not None and b else "-"

out = []
p = out.append
size = int(meta["corpus_bytes"])
sources = meta["sources"].split()
part = meta["part"]
p(f"# coffer vs restic, BENCH_SIZE={meta['size']}\n")
p(f"- machine: {meta['cpu']} ({meta.get('cpu_id', '?')}), {meta['cores']} cores, {meta['memory']}, Linux {meta['kernel']}")
p(f"- work directory (corpus, repositories, restores) on {meta['fs']}")
if meta.get('restore_fs') == 'loop':
    p("- every restore run onto a new ext4 (no journal) of its own, on an image file in the work directory")
p(f"- load average at start / end: {meta['load_start']} / {meta['load_end']}")
p(f"- coffer {meta['coffer']}; {meta['restic']}; {meta['date']}")
p(f"- corpus: {meta['corpus_files']} files, {fmt_bytes(size)} ("
  + ", ".join(f"{s} {fmt_bytes(int(meta['corpus_' + s]))}" for s in sources)
  + f"); after the next night {fmt_bytes(int(meta['corpus_bytes_next']))}")
if "db" in meta:
    p(f"- db: {meta['db']}; the next night: {meta['night']}")
p(f"- median of {meta['runs']} runs per step; restores verified byte for byte: "
  f"full {meta.get('restore_verified', 'no')}, `{part}` {meta.get('restore_path_verified', 'no')}")
rd = med("read-corpus", "cat", 3)
p(f"- reading the corpus from the page cache (`cat`): {rd:.2f} s, "
  f"{size / MiB / rd:,.0f} MiB/s\n")

STEPS = [
    ("initial", "initial backup", "repository growth"),
    ("no-change", "no-change backup", "repository growth"),
    ("snapshots", "`snapshots` (unlock the key, list): the floor under every command", None),
    ("next-night", "next-night backup", "repository growth"),
    ("restore-full", "full restore", "bytes restored"),
    ("restore-path", f"restore of one source (`{part}`)", "bytes restored"),
    ("check", "check --read-data", None),
    ("export", "export vs `tar czf`", "archive size"),
]
# The floors measured next to a step, when it has one.
FLOORS = {
    "initial": "floor: `tar -cf - | zstd -3 -T2`",
    "restore-full": "floor: `tar -x` (1 thread)",
    "restore-path": "floor: `tar -x` of the source",
}
res = {}
for step, title, bytes_label in STEPS:
    other = "tar" if step == "export" else "restic"
    floor = step in FLOORS and med(step, "floor", 3) is not None
    p(f"## {title}\n")
    p(f"| | wall s | CPU s (user+sys) | peak RSS MiB | {bytes_label or 'bytes'} |")
    p("|---|---:|---:|---:|---:|")
    m = {}
    gz = floor and med(step, "floor-gz", 3) is not None
    for tool in ("coffer", other) + (("floor",) if floor else ()) + (("floor-gz",) if gz else ()):
        w, c, r, b = (med(step, tool, k) for k in (3, 4, 5, 6))
        m[tool] = (w, c, r / 1024 if r is not None else None, b)
        shown = bytes_label and not (tool.startswith("floor") and step == "initial")
        name = {"floor": FLOORS.get(step), "floor-gz": "floor: `tar -xzf` (gunzip included)"}
        p(f"| {name.get(tool) or tool} | {w:.2f} | {c:.2f} | "
          f"{m[tool][2]:.0f} | {fmt_bytes(b) if shown else '-'} |")
    a, o = m["coffer"], m[other]
    p(f"| **coffer/{other}** | **{ratio(a[0], o[0])}** | {ratio(a[1], o[1])} | "
      f"**{ratio(a[2], o[2])}** | {ratio(a[3], o[3], 3) if bytes_label else '-'} |")
    if floor:
        f = m["floor"]
        p(f"| **coffer/floor** | **{ratio(a[0], f[0])}** | {ratio(a[1], f[1])} | - | - |")
        p(f"| restic/floor | {ratio(o[0], f[0])} | {ratio(o[1], f[1])} | - | - |")
    if gz:
        g = m["floor-gz"]
        p(f"| coffer/`tar -xzf` | {ratio(a[0], g[0])} | {ratio(a[1], g[1])} | - | - |")
    p("")
    res[step] = m

def target(name, value, limit, ok):
    return f"| {name} | {value} | {limit} | {'met' if ok else '**missed**'} |"

def wall_ratio(step, other="restic"):
    return res[step]["coffer"][0] / res[step][other][0]

p("## Targets of issue 7\n")
p("| target | measured | goal | |")
p("|---|---:|---:|---|")
for step, goal in (("initial", 0.5), ("no-change", 0.33), ("next-night", 0.5),
                   ("restore-full", 0.5), ("restore-path", 0.5), ("check", 0.5)):
    r = wall_ratio(step)
    p(target(f"{step}: wall coffer/restic", f"{r:.2f}", f"<= {goal}", r <= goal))
nb = res["next-night"]
r = nb["coffer"][3] / nb["restic"][3] if nb["restic"][3] else float("inf")
p(target("next-night: bytes added coffer/restic", f"{r:.3f}", "<= 1", r <= 1))
for step in ("initial", "no-change", "next-night", "restore-full", "restore-path", "check"):
    r = res[step]["coffer"][2] / res[step]["restic"][2]
    p(target(f"{step}: peak RSS coffer/restic", f"{r:.2f}", "<= 0.5", r <= 0.5))
r = int(meta["repo_coffer"]) / int(meta["repo_restic"])
p(target("repository size after the initial backup, coffer/restic", f"{r:.3f}", "<= 1", r <= 1))
r = wall_ratio("export", "tar")
p(target("export: wall coffer/`tar czf`", f"{r:.2f}", "<= 1", r <= 1))

# Near the limit: the criterion stage benches (cargo bench --bench stages), when present.
def crit_rate(group, bench):
    d = os.path.join(crit, group, bench, "new")
    try:
        est = json.load(open(os.path.join(d, "estimates.json")))
        thr = json.load(open(os.path.join(d, "benchmark.json")))["throughput"]["Bytes"]
    except (OSError, KeyError, ValueError, TypeError):
        return None
    return thr / (est["mean"]["point_estimate"] / 1e9) / MiB

rate = size / MiB / res["initial"]["coffer"][0]
stages = [(g, b, crit_rate(g, b)) for g in ("chunk", "blob_id", "zstd_l3", "zstd_l1", "seal",
                                          "pipeline_1thread", "pipeline_rayon")
          for b in ("text", "random")]
pipe = crit_rate("pipeline_rayon", "text")
if pipe:
    limit = min(pipe, size / MiB / rd)
    p(target("initial backup rate / min(2-core pipeline rate (text), read rate)",
             f"{rate:,.0f} MiB/s = {rate / limit:.0%}", ">= 75 %", rate >= 0.75 * limit))
    p("\n## Per-core stage rates (criterion, `cargo bench --bench stages`, MiB/s of input)\n")
    p("| stage | text | random |")
    p("|---|---:|---:|")
    for g in dict.fromkeys(g for g, _, _ in stages):
        t, rnd = (next(x for gg, b, x in stages if gg == g and b == k) for k in ("text", "random"))
        p(f"| {g} | {t or 0:,.0f} | {rnd or 0:,.0f} |")
else:
    p(f"| initial backup rate vs 75 % of the 2-core pipeline rate | {rate:,.0f} MiB/s | "
      "needs `cargo bench --bench stages` first | not measured |")
print("\n".join(out))
PY
cat "$W/results.md"
log "results in $W/results.md, raw numbers in $RAW, logs in $W/logs"
