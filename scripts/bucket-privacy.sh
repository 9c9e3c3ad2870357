#!/usr/bin/env bash
# What a reader of the bucket sees, per repository format version (docs/crypto.md):
#   scripts/bucket-privacy.sh lone   pack sizes a lone new file gives in an incremental backup
#   scripts/bucket-privacy.sh cost   repository size: first backups of real data, nightly
#                                    backups with one small change, a backup of no change
# COFFER (default target/debug/coffer; sizes do not depend on the build), CORPORA (default
# /usr/share/doc and the crate registry's sources).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
B=${COFFER:-$root/target/debug/coffer}
export COFFER_PASSWORD=bucket-privacy
unset COFFER_PASSWORD_FILE COFFER_PASSWORD_COMMAND
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fresh() {
    rm -rf "$work/repo" "$work/cache" "$work/src"
    export COFFER_REPO=$work/repo COFFER_CACHE_DIR=$work/cache
    mkdir -p "$work/src"
    "$B" init --format-version "$1" >/dev/null
}
size() { du -sb "$work/repo" | cut -f1; }

lone() {
    for v in 2 3; do
        fresh "$v"
        echo base >"$work/src/base.txt"
        "$B" backup "$work/src" >/dev/null
        line="version $v:"
        for n in 1000 10000 50000 100000 200000 300000 1000000 5000000; do
            before=$(find "$work/repo/packs" -type f | sort)
            head -c "$n" /dev/urandom >"$work/src/f$n"
            "$B" backup "$work/src" >/dev/null
            new=$(comm -13 <(echo "$before") <(find "$work/repo/packs" -type f | sort) |
                xargs stat -c %s | sort -n | paste -sd+)
            line="$line $n:$new"
        done
        echo "$line"
    done
}

cost() {
    corpora=${CORPORA:-"/usr/share/doc $(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src 2>/dev/null || true)"}
    for v in 2 3; do
        for c in $corpora; do
            fresh "$v"
            "$B" backup "$c" >/dev/null
            echo "version $v: first backup of $c: $(size) bytes"
        done
        fresh "$v"
        head -c 10485760 /dev/urandom >"$work/src/data.bin"
        echo 0 >"$work/src/counter.txt"
        "$B" backup "$work/src" >/dev/null
        first=$(size)
        for n in $(seq 1 10); do
            echo "$n" >"$work/src/counter.txt"
            "$B" backup "$work/src" >/dev/null
        done
        last=$(size)
        "$B" backup "$work/src" >/dev/null
        echo "version $v: 10 MiB first $first, per nightly change $(((last - first) / 10)), no change $(($(size) - last))"
    done
}

case ${1:-} in
lone) lone ;;
cost) cost ;;
*) echo "usage: $0 lone|cost" >&2; exit 2 ;;
esac
