#!/bin/sh
# Builds certfetch's .deb and .rpm into OUTDIR (created if missing):
#   dist/package/build.sh OUTDIR [VERSION]
# VERSION defaults to the release tag on HEAD, else the last release plus
# +git<commit time>.<commit>. Needs Go and git; nothing else (nfpm is used
# as a Go library from this directory's own module).
set -eu
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 OUTDIR [VERSION]" >&2
  exit 2
fi
mkdir -p "$1"
out=$(cd "$1" && pwd)
cd "$(dirname "$0")"
exec go run . --out "$out" ${2:+--version "$2"}
