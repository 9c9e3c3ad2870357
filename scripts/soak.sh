#!/usr/bin/env bash
# Long version of the kill tests (tests/kill.rs): SIGKILL at random moments of backup, prune,
# forget, sync and passphrase changes, COFFER_KILLS times per command (default 500), then
# check, restore and the next run of the same command. Prints the figures for
# docs/reliability.md. Usage: scripts/soak.sh [KILLS]
set -euo pipefail
cd "$(dirname "$0")/.."
kills=${1:-${COFFER_KILLS:-500}}
start=$(date +%s)
COFFER_KILLS=$kills cargo test --release --test kill --test lifecycle --test engine -- --test-threads=2
echo "soak: $kills kills per command (backup, forget+prune, prune, sync, key passwd) survived;"
echo "soak: every kill followed by check, snapshot presence and periodic byte-identical restore;"
echo "soak: wall $(( $(date +%s) - start ))s"
