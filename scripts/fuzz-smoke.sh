#!/usr/bin/env bash
# Fuzz smoke test: build every cargo-fuzz target of fuzz/ with nightly and run each for
# FUZZ_SECONDS (default 20) seconds, starting from fuzz/corpus/<target> and
# fuzz/regressions/<target>. Exits non-zero when any target crashes, leaks, times out or runs
# out of memory; libFuzzer's reproducer is then in fuzz/artifacts/<target>/.
#
# New inputs found go to a scratch directory, so the committed corpus is not changed. To keep
# interesting ones, merge them by hand:
#   cargo +nightly fuzz run <target> fuzz/corpus/<target> <scratch dir> -- -merge=1
#
# Needs: the nightly toolchain (rustup toolchain nightly) and cargo-fuzz (installed from
# crates.io when missing). Environment: FUZZ_SECONDS, FUZZ_TARGETS (space-separated subset),
# CARGO_TARGET_DIR (default fuzz/target).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
seconds=${FUZZ_SECONDS:-20}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/fuzz/target}

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz-smoke: the nightly toolchain is missing (cargo-fuzz needs it)" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

cd "$root/fuzz"
echo "fuzz-smoke: building fuzz targets"
cargo +nightly fuzz build

targets=${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

failed=()
for target in $targets; do
    if [[ ! -d corpus/$target ]] || [[ -z $(ls -A "corpus/$target") ]]; then
        echo "fuzz-smoke: fuzz/corpus/$target is missing or empty" >&2
        failed+=("$target")
        continue
    fi
    dirs=("$scratch/$target" "corpus/$target")
    if [[ -d regressions/$target ]]; then
        dirs+=("regressions/$target")
    fi
    mkdir -p "$scratch/$target"
    echo "fuzz-smoke: $target for ${seconds}s"
    if ! cargo +nightly fuzz run "$target" "${dirs[@]}" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
        2>"$scratch/$target.log"; then
        tail -n 60 "$scratch/$target.log" >&2
        echo "fuzz-smoke: $target FAILED (reproducer in fuzz/artifacts/$target/)" >&2
        failed+=("$target")
    else
        grep -E '^stat::number_of_executed_units' "$scratch/$target.log" | sed "s/^/  $target /" || true
    fi
done

if ((${#failed[@]})); then
    echo "fuzz-smoke: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz-smoke: all targets ran ${seconds}s without a crash"
