#!/usr/bin/env bash
# Restore one tree with `tar -x`, coffer, restic and (when installed) rustic, side by side on a
# local disk: the figures of docs/performance.md, "restic and rustic on the same 57,274 files".
#
#   scripts/restore-side-by-side.sh                     # /usr/share/doc, 3 rounds
#   DATA="/usr/share/doc $HOME/.cargo/registry/src /usr/include" RUNS=5 scripts/restore-side-by-side.sh
#
# The directories of DATA are copied into WORK_DIR/tree (so the source is never touched), the
# copy is backed up once by each tool into its own repository, and an uncompressed tar of it is
# written. Then RUNS rounds, each tool once per round, interleaved: every run restores into a
# new directory after `rm -rf` of the last one and `sync`; as root the kernel's caches are
# dropped and the tool's repository (or the tar) is read back first, so that every tool starts
# from the same page cache. Each line printed is one run: tool, wall s, user s, system s, peak
# RSS KiB; the medians come last. The first run of every tool is checked against the copy
# (`diff -r --no-dereference`).
#
# On ext4 without a journal, every run pays for the inodes the previous run freed (see
# fresh_restore in scripts/bench.sh): the tools alike, as they are interleaved.
#
# Environment:
#   DATA        directories to copy and restore; default /usr/share/doc
#   RUNS        rounds; default 3
#   WORK_DIR    work directory, on the disk to measure; default /var/tmp/coffer-side-by-side
#               (wiped at the start)
#   COFFER_BIN  default target/release/coffer of this checkout (built when missing)
#   RESTIC      default restic on PATH (the restic step is left out without one)
#   RUSTIC      default rustic on PATH (left out without one; `cargo install rustic-rs`)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=${DATA:-/usr/share/doc}
RUNS=${RUNS:-3}
W=${WORK_DIR:-/var/tmp/coffer-side-by-side}
COFFER=${COFFER_BIN:-$ROOT/target/release/coffer}
RESTIC=${RESTIC:-$(command -v restic || true)}
RUSTIC=${RUSTIC:-$(command -v rustic || true)}
export COFFER_PASSWORD=side-by-side RESTIC_PASSWORD=side-by-side RUSTIC_PASSWORD=side-by-side

log() { printf '[side-by-side %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { log "RUNS must be a positive integer"; exit 1; }
[[ -x /usr/bin/time ]] || { log "/usr/bin/time is needed (apt-get install -y time)"; exit 1; }
if [[ ! -x $COFFER ]]; then
  log "building coffer (release)"
  (cd "$ROOT" && cargo build --release --quiet)
fi

rm -rf "$W"
mkdir -p "$W/tree" "$W/out"
for d in $DATA; do
  [[ -d $d ]] || { log "not a directory: $d"; exit 1; }
  cp -a "$d" "$W/tree/$(basename "$d")-$(printf '%s' "$d" | cksum | cut -d' ' -f1)"
done
log "tree: $(find "$W/tree" -type f | wc -l) files in $(find "$W/tree" -type d | wc -l) directories, $(du -sh "$W/tree" | cut -f1)"

TOOLS=(tar coffer)
tar -cf "$W/tree.tar" -C "$W" tree
"$COFFER" --repo "$W/coffer" --cache-dir "$W/coffer-cache" init >/dev/null
(cd "$W" && "$COFFER" --repo "$W/coffer" --cache-dir "$W/coffer-cache" backup tree >/dev/null)
if [[ -n $RESTIC ]]; then
  TOOLS+=(restic)
  "$RESTIC" -r "$W/restic" --cache-dir "$W/restic-cache" init >/dev/null
  (cd "$W" && "$RESTIC" -r "$W/restic" --cache-dir "$W/restic-cache" backup --compression auto tree >/dev/null)
fi
if [[ -n $RUSTIC ]]; then
  TOOLS+=(rustic)
  "$RUSTIC" -r "$W/rustic" --cache-dir "$W/rustic-cache" init >/dev/null 2>&1
  (cd "$W" && "$RUSTIC" -r "$W/rustic" --cache-dir "$W/rustic-cache" backup tree >/dev/null 2>&1)
fi
log "tools: ${TOOLS[*]}"

: >"$W/runs.tsv"
for r in $(seq "$RUNS"); do
  for t in "${TOOLS[@]}"; do
    rm -rf "$W/out"
    dest=$W/out/$t-$r
    mkdir -p "$dest"
    sync
    if [[ -w /proc/sys/vm/drop_caches ]]; then
      echo 3 >/proc/sys/vm/drop_caches
      case $t in
        tar) cat "$W/tree.tar" >/dev/null ;;
        *) find "$W/$t" "$W/$t-cache" -type f -print0 | xargs -0 cat >/dev/null ;;
      esac
    fi
    case $t in
      tar) cmd=(tar -xf "$W/tree.tar" -C "$dest") ;;
      coffer) cmd=("$COFFER" --repo "$W/coffer" --cache-dir "$W/coffer-cache" restore latest --target "$dest") ;;
      restic) cmd=("$RESTIC" -r "$W/restic" --cache-dir "$W/restic-cache" restore latest --target "$dest") ;;
      rustic) cmd=("$RUSTIC" -r "$W/rustic" --cache-dir "$W/rustic-cache" restore latest "$dest") ;;
    esac
    /usr/bin/time -f "%e %U %S %M" -o "$W/time" "${cmd[@]}" >"$W/$t.out" 2>&1 ||
      { tail -n 5 "$W/$t.out" >&2; log "$t failed"; exit 1; }
    read -r wall user sys rss <"$W/time"
    printf '%s\t%s\t%s\t%s\t%s\n' "$t" "$wall" "$user" "$sys" "$rss" | tee -a "$W/runs.tsv"
    if [[ $r == 1 ]]; then
      # tar and coffer restore tree/ at the top, restic and rustic under its absolute path.
      got=$(find "$dest" -type d -name tree -print -quit)
      diff -r --no-dereference "$W/tree" "$got" >/dev/null || { log "$t: the restored tree differs"; exit 1; }
    fi
  done
done
rm -rf "$W/out"
python3 - "$W/runs.tsv" <<'PY'
import statistics, sys, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    t, wall, user, sys_, rss = line.split()
    runs[t].append((float(wall), float(user) + float(sys_), int(rss)))
base = statistics.median(w for w, _, _ in runs["coffer"])
print("| tool | median wall s | median CPU s | peak RSS MiB | wall / coffer |")
print("|---|---:|---:|---:|---:|")
for t, v in runs.items():
    w = statistics.median(x[0] for x in v)
    c = statistics.median(x[1] for x in v)
    m = max(x[2] for x in v) / 1024
    print(f"| {t} | {w:.2f} | {c:.2f} | {m:.0f} | {w / base:.2f} |")
PY
