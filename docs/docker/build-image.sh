#!/bin/sh
# Build the coffer image from a coffer binary built beforehand, without pulling anything:
#   cargo build --release && docs/docker/build-image.sh [BINARY] [TAG]
# BINARY defaults to target/release/coffer, TAG to coffer:latest.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-"$here/../../target/release/coffer"}
tag=${2:-coffer:latest}
[ -x "$bin" ] || { echo "no coffer binary at $bin: build it first (cargo build --release)" >&2; exit 1; }
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
mkdir -p "$root/usr/local/bin" "$root/tmp" "$root/archive" "$root/cache" "$root/etc"
chmod 1777 "$root/tmp"
cp "$bin" "$root/usr/local/bin/coffer"
# The shared libraries and the loader the binary needs (glibc, libgcc_s, libm).
for lib in $(ldd "$bin" | awk '/=> \//{print $3} /^\t\//{print $1}'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
echo "root:x:0:0:root:/archive:/usr/local/bin/coffer" > "$root/etc/passwd"
echo "root:x:0:" > "$root/etc/group"
echo coffer > "$root/etc/hostname"
cp "$here/Dockerfile" "$ctx/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$ctx"
