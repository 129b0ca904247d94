#!/usr/bin/env bash
# install-pytools.sh — install the pinned Python tools of the SDK's tests into .tools/pytools:
# httpx, mypy, pytest, openapi-python-client and langgraph, at the versions in
# clients/python/tools-requirements.txt (with every transitive package pinned by
# clients/python/tools-constraints.txt). Prints the virtual environment's python last.
#
# Idempotent: when the venv was made from the same two files (a stamp holds their hash) this does
# nothing, so `make test` and the tests that call it lazily pay for the install once. The venv is
# made by the pinned uv from the system python3; the packages come through pip as pip is
# configured on this machine (mirrors included).
set -euo pipefail

PYTHON="${PYTHON:-python3}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.tools/pytools"
reqs="$root/clients/python/tools-requirements.txt"
cons="$root/clients/python/tools-constraints.txt"
stamp="$dest/.installed-from"

want="$( { cat "$reqs"; [[ ! -f $cons ]] || cat "$cons"; } | sha256sum | cut -d' ' -f1)"
if [[ -x $dest/bin/python && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
	echo "$dest/bin/python"
	exit 0
fi

uv="$(bash "$root/scripts/install-uv.sh")"
python="$(command -v "$PYTHON")"
# Build beside the old one and swap, so a test running meanwhile never sees half a venv.
tmp="$dest.new.$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
"$uv" venv --quiet --python "$python" "$tmp" >&2
args=(-r "$reqs")
[[ -f $cons ]] && args+=(-c "$cons")
"$python" -m pip --python "$tmp/bin/python" install --quiet --disable-pip-version-check "${args[@]}" >&2
echo "$want" >"$tmp/.installed-from"
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
# uv venv writes absolute paths into the scripts' shebangs: a moved venv's entry points would
# name the temporary directory. Rewrite them to the final place.
grep -rlI --null "$tmp" "$dest/bin" 2>/dev/null | xargs -0r sed -i "s#$tmp#$dest#g"
echo "$dest/bin/python"
