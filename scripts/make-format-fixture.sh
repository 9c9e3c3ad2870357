#!/usr/bin/env bash
# Write the golden repository of the current format version into tests/fixtures/format-vN/repo,
# with the coffer binary given (default target/release/coffer). Run once per format version,
# when that version is introduced; the fixture is then committed and never rewritten, so that
# tests/format_compat.rs proves every later build still reads it.
#
#   scripts/make-format-fixture.sh 2 [path/to/coffer]
#
# The data is deterministic (the test checks its bytes); the repository is not (random ids,
# nonces, chunker seed), which is why it is generated once and kept.
set -euo pipefail

version=${1:?usage: make-format-fixture.sh VERSION [COFFER]}
root=$(cd "$(dirname "$0")/.." && pwd)
coffer=$(realpath "${2:-$root/target/release/coffer}")
dest="$root/tests/fixtures/format-v$version"
if [[ -e $dest ]]; then
    echo "make-format-fixture: $dest exists; a fixture is never rewritten" >&2
    exit 1
fi

work=$(mktemp -d)
# A run that fails half-way leaves no partial fixture behind (it would refuse the next run).
done=0
trap 'rm -rf "$work"; if [[ $done != 1 ]]; then rm -rf "$dest"; fi' EXIT
data="$work/data"
mkdir -p "$data/docs" "$data/empty-dir"
printf 'hello coffer format v%s\n' "$version" >"$data/docs/readme.txt"
printf 'x' >"$data/docs/one-byte.txt"
# 320 KiB of incompressible bytes (a keyed counter stream) and 200 KiB of compressible text.
python3 - "$data" <<'EOF'
import hashlib, sys
d = sys.argv[1]
with open(f"{d}/blob.bin", "wb") as f:
    for i in range(320 * 1024 // 32):
        f.write(hashlib.sha256(b"coffer fixture %d" % i).digest())
with open(f"{d}/text.txt", "w") as f:
    for i in range(4000):
        f.write(f"line {i}: the quick brown fox jumps over the lazy dog {i * 7919 % 1000}\n")
EOF
ln -s docs/readme.txt "$data/link"
find "$data" -exec touch -h -d '2026-11-23T03:00:00Z' {} +

export COFFER_REPO="$dest/repo"
export COFFER_PASSWORD=coffer-fixture
export COFFER_CACHE_DIR="$work/cache"
unset COFFER_PASSWORD_FILE COFFER_PASSWORD_COMMAND
"$coffer" init --format-version "$version"
(cd "$work" && "$coffer" backup --host fixture-host --tag fixture \
    --time 2026-11-23T04:00:00Z data)
"$coffer" check --read-data
"$coffer" snapshots --json
sha256sum "$data/blob.bin" "$data/text.txt"
done=1
