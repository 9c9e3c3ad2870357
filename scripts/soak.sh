#!/usr/bin/env bash
# Long version of the kill tests (tests/kill.rs): SIGKILL at random moments of backup, prune,
# forget, sync and passphrase changes, COFFER_KILLS times per command (default 500), then
# check, restore and the next run of the same command; then the lifecycle and engine suites
# (concurrent backups, backup during prune, crash matrix). Prints the figures for
# docs/reliability.md. Usage: scripts/soak.sh [KILLS]
set -euo pipefail
cd "$(dirname "$0")/.."
kills=${1:-${COFFER_KILLS:-500}}
log=${SOAK_LOG:-$(mktemp -t coffer-soak.XXXXXX)}
start=$(date +%s)
set +e
COFFER_KILLS=$kills cargo test --release --test kill --test lifecycle --test engine \
    -- --test-threads=2 --nocapture 2>&1 | tee "$log" | grep -E '^(test |kill-figures|test result)'
status=${PIPESTATUS[0]}
set -e
echo "soak: $kills kills per command; log in $log"
grep '^kill-figures' "$log" | sed 's/^kill-figures: /soak: /'
echo "soak: wall $(( $(date +%s) - start ))s, exit $status"
exit "$status"
