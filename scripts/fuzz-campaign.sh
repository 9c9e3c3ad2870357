#!/usr/bin/env bash
# The long fuzz run of issue 8: every cargo-fuzz target for FUZZ_SECONDS (default 600) seconds,
# growing fuzz/corpus/<target> in place and then minimising it (`cargo fuzz cmin`), so the
# committed corpus keeps every input that reached new coverage. A crash stops that target;
# its reproducer is left in fuzz/artifacts/<target>/ (add it under fuzz/regressions/<target>/
# once fixed: tests/fuzz_corpus.rs and scripts/fuzz-smoke.sh replay that directory).
#
# Environment: FUZZ_SECONDS, FUZZ_TARGETS (space-separated subset), FUZZ_JOBS (targets run at
# once, default 1), CARGO_TARGET_DIR (default fuzz/target). Prints one line of figures per
# target (executions, coverage, corpus size before and after) and a summary at the end.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
seconds=${FUZZ_SECONDS:-600}
jobs=${FUZZ_JOBS:-1}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/fuzz/target}
cd "$root/fuzz"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
cargo +nightly fuzz build
targets=${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}
logs=$(mktemp -d)
echo "fuzz-campaign: ${seconds}s per target, $jobs at once, logs in $logs"

one() {
    local t=$1 before after status=0
    mkdir -p "corpus/$t"
    before=$(find "corpus/$t" -type f | wc -l)
    local dirs=("corpus/$t")
    [[ -d regressions/$t ]] && dirs+=("regressions/$t")
    cargo +nightly fuzz run "$t" "${dirs[@]}" -- -max_total_time="$seconds" \
        -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 >"$logs/$t.log" 2>&1 || status=$?
    if [[ $status -eq 0 ]]; then
        cargo +nightly fuzz cmin "$t" "corpus/$t" >"$logs/$t.cmin.log" 2>&1 || true
    fi
    after=$(find "corpus/$t" -type f | wc -l)
    local execs cov
    execs=$(grep -oE '^stat::number_of_executed_units: [0-9]+' "$logs/$t.log" | grep -oE '[0-9]+$' || echo "?")
    cov=$(grep -oE 'cov: [0-9]+' "$logs/$t.log" | tail -1 | grep -oE '[0-9]+' || echo "?")
    if [[ $status -eq 0 ]]; then
        echo "fuzz-campaign: $t: ${seconds}s, $execs executions, coverage $cov, corpus $before -> $after files, no crash"
    else
        echo "fuzz-campaign: $t: FAILED (exit $status) after $execs executions; see $logs/$t.log and fuzz/artifacts/$t/"
        return 1
    fi
}

failed=0
running=0
for t in $targets; do
    one "$t" &
    running=$((running + 1))
    if ((running >= jobs)); then
        wait -n || failed=$((failed + 1))
        running=$((running - 1))
    fi
done
while ((running > 0)); do
    wait -n || failed=$((failed + 1))
    running=$((running - 1))
done
if ((failed)); then
    echo "fuzz-campaign: $failed target(s) failed" >&2
    exit 1
fi
echo "fuzz-campaign: every target ran ${seconds}s without a crash"
