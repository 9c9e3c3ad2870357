#!/usr/bin/env bash
# Runs every check CI runs: formatting, lints, all tests (unit, property, component,
# integration against the real binary, fuzz corpora), and under CI a short fuzz run.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
# The Docker tests build their image from Debian's static busybox.
if [ ! -x /bin/busybox ] && command -v apt-get >/dev/null 2>&1; then
  apt-get install -y busybox-static >/dev/null || echo "warning: could not install busybox-static" >&2
fi
# The archive tests decrypt with GnuPG, as the old setup's operators did.
if ! command -v gpg >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  apt-get install -y gnupg >/dev/null || echo "warning: could not install gnupg" >&2
fi
# The mount tests mount through fusermount3 (they need /dev/fuse too).
if ! command -v fusermount3 >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  apt-get install -y fuse3 >/dev/null || echo "warning: could not install fuse3" >&2
fi
cargo test --all-targets
if [ "${CI:-}" = "true" ] || [ "${COFFER_FUZZ_SMOKE:-}" = "1" ]; then
  scripts/fuzz-smoke.sh
fi
echo "all tests passed"
