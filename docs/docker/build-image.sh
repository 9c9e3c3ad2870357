#!/bin/sh
# Build the coffer image from a coffer binary built beforehand, without pulling anything:
#   cargo build --release && docs/docker/build-image.sh [BINARY] [TAG]
# BINARY defaults to target/release/coffer, TAG to coffer:latest. Needs strip (binutils) and a
# CA bundle (ca-certificates) on the build host.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-"$here/../../target/release/coffer"}
tag=${2:-coffer:latest}
[ -x "$bin" ] || { echo "no coffer binary at $bin: build it first (cargo build --release)" >&2; exit 1; }
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
mkdir -p "$root/usr/local/bin" "$root/bin" "$root/tmp" "$root/archive" "$root/cache" \
    "$root/etc/ssl/certs"
chmod 1777 "$root/tmp"
# Stripped: the release binary's line tables are for profiling on the host, not for the image.
strip -o "$root/usr/local/bin/coffer" "$bin"
# The old image's manual trigger: `docker exec <c> backup` and `docker exec <c> /bin/backup`.
ln -s coffer "$root/usr/local/bin/backup"
ln -s ../usr/local/bin/coffer "$root/bin/backup"
# `docker exec <c> restore --snapshot latest --path workspace/ --to-volume <volume>`.
ln -s coffer "$root/usr/local/bin/restore"
# TLS roots for https S3 endpoints and notifications (the image has no system store).
ca=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
[ -s "$ca" ] || { echo "no CA bundle at $ca: install ca-certificates (apt-get install ca-certificates) or set SSL_CERT_FILE" >&2; exit 1; }
cp -L "$ca" "$root/etc/ssl/certs/ca-certificates.crt"
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
