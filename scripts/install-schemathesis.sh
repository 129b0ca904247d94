#!/usr/bin/env bash
# install-schemathesis.sh — install the pinned schemathesis into .tools/schemathesis (its CLI at
# .tools/schemathesis/bin/st), for the API fuzzing test (controlplane/e2e/openapi_test.go).
#
# Idempotent: when st already reports the pinned version this does nothing. The virtual
# environment is made by the pinned uv from the system python3 (no ensurepip needed); the packages
# come through pip as pip is configured on this machine (mirrors included). Prints the st path last.
#
#   SCHEMATHESIS_VERSION=4.32.5 scripts/install-schemathesis.sh   # override the pin
set -euo pipefail

SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
PYTHON="${PYTHON:-python3}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.tools/schemathesis"
st="$dest/bin/st"

if [[ -x $st ]] && [[ "$("$st" --version 2>/dev/null || true)" == "st, version $SCHEMATHESIS_VERSION" ]]; then
	echo "$st"
	exit 0
fi

uv="$(bash "$root/scripts/install-uv.sh")"
python="$(command -v "$PYTHON")"
rm -rf "$dest"
"$uv" venv --quiet --python "$python" "$dest" >&2
"$python" -m pip --python "$dest/bin/python" install --quiet --disable-pip-version-check \
	"schemathesis==$SCHEMATHESIS_VERSION" >&2
got="$("$st" --version)"
if [[ $got != "st, version $SCHEMATHESIS_VERSION" ]]; then
	echo "install-schemathesis: installed $got; want $SCHEMATHESIS_VERSION" >&2
	exit 1
fi
echo "$st"
