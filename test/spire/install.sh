#!/usr/bin/env bash
# Installs spire-server and spire-agent v1.13.3 from the pinned tools module
# in test/spire/tools (never the product's go.mod) when they are missing.
# About 20 minutes on a cold 2-core machine (cgo: needs gcc), seconds when the
# Go build cache is warm. Prints the directory holding both binaries.
#
#   dir="$(test/spire/install.sh)" && export PATH="$dir:$PATH"
#
# SPIRE_BIN_DIR overrides the target directory (default: $(go env GOPATH)/bin).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="${SPIRE_BIN_DIR:-$(go env GOPATH)/bin}"
want="1.13.3"

have() { # have <binary>: present and of the pinned version
	[[ -x "$dir/$1" ]] && "$dir/$1" --version 2>&1 | grep -q "^$want"
}
if have spire-server && have spire-agent; then
	echo "$dir"
	exit 0
fi
echo "test/spire/install.sh: building SPIRE $want into $dir (about 20 min on a cold machine)" >&2
start=$(date +%s)
mkdir -p "$dir"
(cd "$here/tools" && CGO_ENABLED=1 GOBIN="$dir" GOFLAGS=-mod=readonly \
	go install github.com/spiffe/spire/cmd/spire-server github.com/spiffe/spire/cmd/spire-agent) >&2
echo "test/spire/install.sh: built in $(( $(date +%s) - start ))s" >&2
have spire-server && have spire-agent || { echo "test/spire/install.sh: built binaries do not report $want" >&2; exit 1; }
echo "$dir"
