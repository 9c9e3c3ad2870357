#!/usr/bin/env bash
# Install coffer with its shell completions and man pages.
#
#   scripts/install.sh                      # build (release) and install under /usr/local
#   PREFIX=$HOME/.local scripts/install.sh  # without root
#
# Environment: PREFIX (default /usr/local), COFFER_BIN (an existing binary: no build).
# Installs $PREFIX/bin/coffer, completions for bash, zsh and fish under $PREFIX/share, and one
# man page per command in $PREFIX/share/man/man1 (`man coffer`, `man coffer-restore`, ...).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-/usr/local}

if [[ -z ${COFFER_BIN:-} ]]; then
  (cd "$ROOT" && cargo build --release --locked --quiet)
  COFFER_BIN=$ROOT/target/release/coffer
fi
[[ -x $COFFER_BIN ]] || { echo "install: no coffer binary at $COFFER_BIN" >&2; exit 1; }

install -Dm0755 "$COFFER_BIN" "$PREFIX/bin/coffer"
bin=$PREFIX/bin/coffer
mkdir -p "$PREFIX/share/bash-completion/completions" "$PREFIX/share/zsh/site-functions" \
  "$PREFIX/share/fish/vendor_completions.d" "$PREFIX/share/man/man1"
"$bin" completion bash >"$PREFIX/share/bash-completion/completions/coffer"
"$bin" completion zsh >"$PREFIX/share/zsh/site-functions/_coffer"
"$bin" completion fish >"$PREFIX/share/fish/vendor_completions.d/coffer.fish"
"$bin" man --dir "$PREFIX/share/man/man1" >/dev/null
echo "installed $bin, completions (bash, zsh, fish) and man pages under $PREFIX/share"
