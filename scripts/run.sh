#!/usr/bin/env bash
# run.sh — start a single-host Environment Fabric: one agent and one control plane on this machine.
# This is what `make run` runs. On a fresh clone it installs the pinned uv, builds both binaries,
# starts the agent, waits for it, starts the control plane, waits until it is ready and prints its
# URL. Ctrl-C (or SIGTERM) stops both; if either one exits, the other is stopped too.
#
# Settings (environment; anything else the programs read, e.g. DATABASE_URL, passes through):
#   DATA_ROOT          where environments, the uv cache, the SQLite database and logs go (./data)
#   LISTEN_ADDR        control plane REST API (127.0.0.1:8080)
#   AGENT_LISTEN_ADDR  agent (127.0.0.1:8081)
#   AGENT_TOKEN        shared secret between the two; a random one per run when unset
#   UV_BIN             uv to use (.tools/uv/bin/uv, installed by scripts/install-uv.sh)
#   RUN_WAIT_SECONDS   how long to wait for each program to come up (60)
# Logs go to the terminal, prefixed [agent] / [controlplane], and to $DATA_ROOT/logs/*.log.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

script_name=run
# shellcheck source=scripts/lib.sh
source "$root/scripts/lib.sh"

# --- tools and binaries ------------------------------------------------------------------------
prepare_binaries

# --- configuration -----------------------------------------------------------------------------
DATA_ROOT="${DATA_ROOT:-$root/data}"
mkdir -p "$DATA_ROOT/logs"
DATA_ROOT="$(cd "$DATA_ROOT" && pwd)"
export DATA_ROOT
logs="$DATA_ROOT/logs"

AGENT_LISTEN_ADDR="${AGENT_LISTEN_ADDR:-127.0.0.1:8081}"
LISTEN_ADDR="${LISTEN_ADDR:-127.0.0.1:8080}"
wait_seconds="${RUN_WAIT_SECONDS:-60}"

use_pip_index

if [[ -z ${AGENT_TOKEN:-} ]]; then
	# The agent is never left open: without a token of the user's, make one for this run.
	AGENT_TOKEN="$(random_token)"
fi
export AGENT_TOKEN

# url_for turns a listen address into a URL a client on this host can use
# (":8080", "0.0.0.0:8080" -> 127.0.0.1; "[::]:8080" -> [::1]).
url_for() {
	local addr=$1 host port
	host="${addr%:*}"
	port="${addr##*:}"
	case "$host" in
	"" | 0.0.0.0) host=127.0.0.1 ;;
	"[::]") host="[::1]" ;;
	esac
	printf 'http://%s:%s' "$host" "$port"
}
agent_url="$(url_for "$AGENT_LISTEN_ADDR")"
cp_url="$(url_for "$LISTEN_ADDR")"

# http_any URL: true when anything answers HTTP at URL.
http_any() { curl -sS -o /dev/null --max-time 2 "$1" 2>/dev/null; }

# --- processes ---------------------------------------------------------------------------------
agent_pid=""
cp_pid=""

# start NAME VAR=VALUE... : start_program for bin/NAME, remembering where its log of this run
# begins (log_start[NAME]) for log_tail.
declare -A log_start=()
start() {
	start_program "$1" "$@"
	log_start[$1]=$log_offset
}

# stop_all stops the control plane first (it may be calling the agent), then the agent, and
# returns non-zero if either exited with an error.
stop_all() {
	local rc=0
	stop_pid "$cp_pid"
	stop_pid "$agent_pid"
	if [[ -n $cp_pid ]]; then wait "$cp_pid" 2>/dev/null || rc=1; fi
	if [[ -n $agent_pid ]]; then wait "$agent_pid" 2>/dev/null || rc=1; fi
	cp_pid="" agent_pid=""
	return "$rc"
}

# shellcheck disable=SC2317 # called from the traps below
on_signal() {
	trap - INT TERM HUP
	echo >&2
	say "stopping (received SIG$1)"
	if stop_all; then
		say "stopped"
		exit 0
	fi
	say "stopped; a program exited with an error (see $logs)"
	exit 1
}
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'on_signal HUP' HUP
# Whatever else ends this script (an error under set -e), leave nothing running.
trap 'stop_all || true' EXIT

# log_tail NAME: the last lines this run's NAME wrote.
log_tail() {
	say "last lines of $logs/$1.log:"
	tail -c "+${log_start[$1]:-1}" "$logs/$1.log" | tail -n 30 >&2 || true
}

# wait_for NAME PID URL: wait until URL answers 200 while PID is alive, bounded by wait_seconds.
wait_for() {
	local name=$1 pid=$2 url=$3 token=${4:-} deadline=$((SECONDS + wait_seconds))
	until http_ok "$url" "$token"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			local rc=0
			wait "$pid" || rc=$?
			say "$name exited (status $rc) before $url answered"
			log_tail "$name"
			exit 1
		fi
		if ((SECONDS >= deadline)); then
			say "$name did not answer $url within ${wait_seconds}s"
			log_tail "$name"
			exit 1
		fi
		sleep 0.2
	done
}

for url in "$agent_url" "$cp_url"; do
	if http_any "$url/healthz"; then
		die "something already answers on $url; stop it or choose other addresses (AGENT_LISTEN_ADDR, LISTEN_ADDR)"
	fi
done

say "starting agent on $AGENT_LISTEN_ADDR (uv: $UV_BIN)"
start agent AGENT_LISTEN_ADDR="$AGENT_LISTEN_ADDR"
agent_pid=$started_pid
wait_for agent "$agent_pid" "$agent_url/healthz" "$AGENT_TOKEN"

say "starting control plane on $LISTEN_ADDR"
start controlplane LISTEN_ADDR="$LISTEN_ADDR" AGENT_URL="$agent_url"
cp_pid=$started_pid
wait_for controlplane "$cp_pid" "$cp_url/readyz"

say "Environment Fabric is listening on $cp_url (data in $DATA_ROOT). Ctrl-C stops it."

# Wait until one of them exits (or a signal arrives: its trap handles that), then stop the other.
rc=0
wait -n "$agent_pid" "$cp_pid" || rc=$?
if ! kill -0 "$agent_pid" 2>/dev/null; then
	say "agent exited (status $rc); stopping the control plane"
	stop_all || true
	log_tail agent
else
	say "control plane exited (status $rc); stopping the agent"
	stop_all || true
	log_tail controlplane
fi
exit 1
