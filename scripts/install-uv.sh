#!/usr/bin/env bash
# install-uv.sh — install the project's pinned uv into .tools/uv (uv at .tools/uv/bin/uv).
#
# Idempotent: when .tools/uv/bin/uv already reports the pinned version this does nothing.
# uv comes from PyPI through pip as pip is configured on this machine (mirrors included);
# `pip install --target` keeps it out of every Python environment. Prints the uv path last.
#
#   UV_VERSION=0.12.24 scripts/install-uv.sh    # override the pin (for trying an upgrade)
#   PYTHON=python3.11 scripts/install-uv.sh     # pick the interpreter that runs pip
set -euo pipefail

UV_VERSION="${UV_VERSION:-0.12.24}"
PYTHON="${PYTHON:-python3}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.tools/uv"
uv="$dest/bin/uv"

# installed_version prints the version the installed uv reports ("uv 0.12.24 (...)"), or nothing.
installed_version() {
	[[ -x $uv ]] || return 0
	local name version
	read -r name version _ < <("$uv" --version 2>/dev/null || true) || true
	[[ ${name:-} == uv ]] && printf '%s\n' "${version:-}"
	return 0
}

if [[ "$(installed_version)" == "$UV_VERSION" ]]; then
	echo "$uv"
	exit 0
fi

if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
	echo "install-uv: '$PYTHON -m pip' is not available; install pip (Debian: apt-get install python3-pip)" >&2
	exit 1
fi

echo "install-uv: installing uv $UV_VERSION into $dest" >&2
mkdir -p "$root/.tools"
# Install next to the destination and swap, so an interrupted install never leaves a broken uv.
tmp="$(mktemp -d "$root/.tools/uv.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
"$PYTHON" -m pip install --quiet --no-input --disable-pip-version-check --root-user-action=ignore \
	--target "$tmp" "uv==$UV_VERSION" >&2
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT

got="$(installed_version)"
if [[ $got != "$UV_VERSION" ]]; then
	echo "install-uv: $uv reports version '${got:-none}', want $UV_VERSION" >&2
	exit 1
fi
echo "$uv"
