#!/bin/sh
# Builds the certfetch container image from dist/container/Containerfile:
#   dist/container/build.sh [TAG]        (default TAG: localhost/certfetch:latest)
# The binary is built here, outside the image (static: CGO_ENABLED=0), and
# the image is FROM scratch, so no registry is contacted. CONTAINER_ENGINE
# names the engine with its global flags (default: podman), e.g.
#   CONTAINER_ENGINE=docker dist/container/build.sh
#   CONTAINER_ENGINE="podman --storage-driver vfs --root /tmp/p" dist/container/build.sh
# GOARCH selects another architecture (the engine's --platform is not set).
set -eu
tag=${1:-localhost/certfetch:latest}
repo=$(cd "$(dirname "$0")/../.." && pwd)
bundle=/etc/ssl/certs/ca-certificates.crt
if [ ! -f "$bundle" ]; then
  echo "build.sh: $bundle missing: install the Debian package ca-certificates" >&2
  exit 1
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT INT TERM
root=$ctx/rootfs
mkdir -p "$root/usr/bin" "$root/etc/ssl/certs" "$root/etc/traefik" "$root/var/lib" "$root/tmp" \
  "$ctx/state/certfetch" "$ctx/output/certfetch"
(cd "$repo" && CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags='-s -w' -o "$root/usr/bin/certfetch" ./cmd/certfetch)
cp "$bundle" "$root/etc/ssl/certs/ca-certificates.crt"
cp "$repo/dist/container/passwd" "$repo/dist/container/group" "$root/etc/"
# Modes do not depend on the caller's umask.
find "$ctx" -type d -exec chmod 0755 {} +
chmod 0755 "$root/usr/bin/certfetch"
chmod 0644 "$root/etc/ssl/certs/ca-certificates.crt" "$root/etc/passwd" "$root/etc/group"
chmod 1777 "$root/tmp"
chmod 0700 "$ctx/state/certfetch"
version=$(git -C "$repo" describe --tags --always --dirty 2>/dev/null || echo unknown)

# shellcheck disable=SC2086 # CONTAINER_ENGINE is a command with its flags
${CONTAINER_ENGINE:-podman} build --build-arg VERSION="$version" \
  -f "$repo/dist/container/Containerfile" -t "$tag" "$ctx"
