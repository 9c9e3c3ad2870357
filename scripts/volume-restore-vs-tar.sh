#!/usr/bin/env bash
# Restore of a ~1 GiB Docker volume, side by side: coffer's one command from the running backup
# service (`docker exec <backup> restore --snapshot latest --path appdata/ --to-volume ...`)
# against the seed's tar procedure (restore-workspace-only.sh: `tar xzf` of the nightly archive
# into /tmp, `rm -rf /target/* && cp -a /source/. /target/` in a throw-away container, restart
# the app), on the same data, from the same nightly run of the coffer service.
#
#   scripts/volume-restore-vs-tar.sh
#
# Variables: COFFER_BIN (default target/release/coffer), WORK_DIR (default
# target/volume-restore-bench, on disk), RANDOM_MIB (default 640: random "media" added to a
# copy of /usr/share/doc and the crate registry's sources), KEEP=1 keeps the work directory.
# Needs root, a Docker engine, docker-compose 1.29 and busybox-static (scripts/test.sh installs
# them); builds the coffer image with docs/docker/build-image.sh and a busybox image.
#
# Two cases, each timed end to end (wall seconds) with the app container's downtime:
#   small:  one file deleted after the backup (the seed's Test Plan 4)
#   full:   the volume emptied
# coffer runs with --no-safety-snapshot (as the seed's script, which takes no copy) and as
# coffer_safe with the default pre-restore snapshot.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${COFFER_BIN:-$ROOT/target/release/coffer}"
WORK="${WORK_DIR:-$ROOT/target/volume-restore-bench}"
RANDOM_MIB="${RANDOM_MIB:-640}"
IMAGE=coffer-bench/coffer:latest
BUSYBOX=coffer-test/busybox:latest
PROJECT="cofferbench$$"

log() { echo "[volume-restore $(date +%H:%M:%S)] $*" >&2; }
die() { echo "volume-restore-vs-tar: $*" >&2; exit 1; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

[ "$(id -u)" = 0 ] || die "run as root (volume mountpoints are read directly)"
[ -x "$BIN" ] || die "no coffer binary at $BIN: cargo build --release"
command -v docker-compose >/dev/null || die "docker-compose is missing"
[ -x /bin/busybox ] || die "/bin/busybox is missing: apt-get install -y busybox-static"

cleanup() {
  (cd "$WORK/project" 2>/dev/null && COMPOSE_PROJECT_NAME=$PROJECT COFFER_PASSWORD=x \
    COFFER_IMAGE=$IMAGE docker-compose down -v --remove-orphans >/dev/null 2>&1) || true
  [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/project"
log "building the images"
"$ROOT/docs/docker/build-image.sh" "$BIN" "$IMAGE" >/dev/null
if ! docker image inspect "$BUSYBOX" >/dev/null 2>&1; then
  ctx=$(mktemp -d)
  mkdir -p "$ctx/bin" && cp /bin/busybox "$ctx/bin/busybox"
  for t in sh tar cp rm sleep cat echo mkdir; do ln -s busybox "$ctx/bin/$t"; done
  printf 'FROM scratch\nCOPY bin /bin\n' > "$ctx/Dockerfile"
  docker build -q -t "$BUSYBOX" "$ctx" >/dev/null
  rm -rf "$ctx"
fi
cp "$ROOT/docs/docker/docker-compose.yml" "$WORK/project/"
cd "$WORK/project"
export COMPOSE_PROJECT_NAME=$PROJECT COFFER_PASSWORD=bench COFFER_IMAGE=$IMAGE
docker-compose up -d >/dev/null 2>&1
APP=${PROJECT}_app_1 BACKUP=${PROJECT}_backup_1 VOLUME=${PROJECT}_appdata
DATA=$(docker volume inspect -f '{{.Mountpoint}}' "$VOLUME")

log "filling the volume: /usr/share/doc, the crate registry's sources, ${RANDOM_MIB} MiB random"
mkdir -p "$DATA/docs" "$DATA/src" "$DATA/media"
cp -a /usr/share/doc/. "$DATA/docs/"
[ -d "${CARGO_HOME:-$HOME/.cargo}/registry/src" ] && cp -a "${CARGO_HOME:-$HOME/.cargo}/registry/src/." "$DATA/src/"
for i in $(seq 1 $((RANDOM_MIB / 64))); do
  head -c $((64 << 20)) /dev/urandom > "$DATA/media/clip$i.bin"
done
FILES=$(find "$DATA" -type f | wc -l)
BYTES=$(du -sb "$DATA" | cut -f1)
log "volume: $FILES files, $BYTES bytes"

for _ in $(seq 1 60); do
  docker logs "$BACKUP" 2>&1 | grep -q "Scheduled backup task registered" && break
  sleep 0.5
done
log "the nightly run (snapshot + tar.gz archive)"
t0=$(now)
docker exec "$BACKUP" backup >/dev/null
BACKUP_S=$(secs "$t0" "$(now)")
ARCHIVE=$(ls -t backups/*.tar.gz | head -1)

# Downtime of the app: from the moment it is seen stopped to the moment it runs again,
# sampled every 50 ms by a watcher.
watch_downtime() {
  local out=$1 down="" t
  : > "$out"
  while [ ! -e "$out.stop" ]; do
    t=$(now)
    if [ "$(docker inspect -f '{{.State.Running}}' "$APP")" != true ]; then
      [ -n "$down" ] || down=$t
    elif [ -n "$down" ]; then
      secs "$down" "$t" >> "$out"; echo >> "$out"; down=""
    fi
    sleep 0.05
  done
}

coffer_restore() {
  docker exec "$BACKUP" restore --snapshot latest --path appdata/ --to-volume "$VOLUME" \
    --no-safety-snapshot >/dev/null
}

coffer_safe_restore() {
  # The default: the volume's state is saved as a pre-restore snapshot first.
  docker exec "$BACKUP" restore --snapshot latest --path appdata/ --to-volume "$VOLUME" >/dev/null
}

tar_restore() {
  # The seed's restore-workspace-only.sh with this project's names (alpine -> busybox).
  mkdir -p /tmp/restore-bench-workspace
  tar xzf "$ARCHIVE" -C /tmp/restore-bench-workspace backup/appdata/
  docker-compose stop app >/dev/null 2>&1
  docker run --rm -v "$VOLUME:/target" -v /tmp/restore-bench-workspace/backup/appdata:/source:ro \
    "$BUSYBOX" sh -c "rm -rf /target/* && cp -a /source/. /target/"
  rm -rf /tmp/restore-bench-workspace
  docker-compose start app >/dev/null 2>&1
}

measure() { # tool case
  local tool=$1 case=$2 t0 wall down
  case $case in
    small) rm -f "$DATA/docs/$(ls "$DATA/docs" | head -1)/copyright" ;;
    full) find "$DATA" -mindepth 1 -delete ;;
  esac
  sync
  watch_downtime "$WORK/down" & local w=$!
  t0=$(now)
  "${tool}_restore"
  wall=$(secs "$t0" "$(now)")
  sleep 0.3; touch "$WORK/down.stop"; wait $w; rm -f "$WORK/down.stop"
  down=$(awk '{ s += $1 } END { printf "%.2f", s }' "$WORK/down")
  local n
  n=$(find "$DATA" -type f | wc -l)
  echo "| $tool | $case | $wall | $down | $n |"
}

echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ); volume: $FILES files, $BYTES bytes; work dir filesystem: $(stat -f -c %T "$WORK")"
echo "- nightly run (snapshot + archive): ${BACKUP_S}s; archive $(du -b "$ARCHIVE" | cut -f1) bytes"
echo
echo "| procedure | case | wall s | app down s | files after |"
echo "|---|---|---:|---:|---:|"
for c in small full; do
  measure coffer "$c"
  measure coffer_safe "$c"
  measure tar "$c"
done
