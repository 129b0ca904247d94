#!/usr/bin/env bash
# build.sh OUT: compile the run sandbox's stage program (envfabric-sandbox.c) into OUT.
# make build, scripts/lib.sh and shared/testutil/fabricbin call it; test binaries build the same
# source with the same flags themselves (agent/sandbox/stageprog.go, stageCFlags).
# Static linking spares every run the dynamic loader; without a static C library it links
# dynamically.
set -euo pipefail
out="${1:?usage: build.sh OUT}"
src="$(dirname "${BASH_SOURCE[0]}")/envfabric-sandbox.c"
cc="${CC:-cc}"
flags=(-O2 -Wall -Wextra)
if ! "$cc" "${flags[@]}" -static -o "$out" "$src" 2>/dev/null; then
	"$cc" "${flags[@]}" -o "$out" "$src"
fi
