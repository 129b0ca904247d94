#!/usr/bin/env bash
# fleet.sh — a whole Environment Fabric fleet on this one machine, for trying it out: a private
# PostgreSQL, two control planes and three agents on loopback, finding each other by encrypted
# gossip and sharing one "NAS" directory. This is what `make fleet` runs. Ctrl-C stops everything
# (control planes first, then agents, then PostgreSQL). An agent or control plane that exits is
# reported and the rest keep running, so members can be stopped and started again by hand
# (pid files in $DATA_ROOT/run/).
#
# Settings (environment):
#   DATA_ROOT        the shared "NAS", the database and logs (./data/fleet)
#   FLEET_CP_PORTS   REST ports of the control planes (8080 8082)
#   FLEET_AGENT_PORTS Connect ports of the agents (8091 8092 8093)
#   FLEET_PG_PORT    PostgreSQL port (55432)
#   UV_BIN           uv to use (.tools/uv/bin/uv, installed by scripts/install-uv.sh)
# Gossip uses the REST/Connect port + 1000 (UDP and TCP). AGENT_TOKEN and GOSSIP_KEYS are made
# fresh for each run unless set. Logs: $DATA_ROOT/logs/<name>.log, and the terminal, prefixed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
script_name=fleet
# shellcheck source=scripts/lib.sh
source "$root/scripts/lib.sh"

# --- tools and binaries ------------------------------------------------------------------------
prepare_binaries
pg_bin="$(compgen -G '/usr/lib/postgresql/*/bin' | sort -V | tail -n 1 || true)"
[[ -n $pg_bin && -x $pg_bin/postgres ]] || die "PostgreSQL is not installed (apt-get install postgresql)"

# --- configuration -----------------------------------------------------------------------------
DATA_ROOT="${DATA_ROOT:-$root/data/fleet}"
mkdir -p "$DATA_ROOT/logs"
DATA_ROOT="$(cd "$DATA_ROOT" && pwd)"
export DATA_ROOT
logs="$DATA_ROOT/logs"
read -r -a cp_ports <<<"${FLEET_CP_PORTS:-8080 8082}"
read -r -a agent_ports <<<"${FLEET_AGENT_PORTS:-8091 8092 8093}"
pg_port="${FLEET_PG_PORT:-55432}"
export AGENT_TOKEN="${AGENT_TOKEN:-$(random_token)}"
export GOSSIP_KEYS="${GOSSIP_KEYS:-$(head -c 32 /dev/urandom | base64)}"
export GOSSIP_PROFILE="${GOSSIP_PROFILE:-local}"
use_pip_index
seeds=""
for p in "${cp_ports[@]}"; do seeds+="${seeds:+,}127.0.0.1:$((p + 1000))"; done

# --- PostgreSQL --------------------------------------------------------------------------------
# PostgreSQL refuses to run as root: as root, the server runs as the postgres user.
pgdata="$DATA_ROOT/pg"
as_pg() { "$@"; }
if ((EUID == 0)); then
	id postgres >/dev/null 2>&1 || die "running as root needs a postgres user (useradd --system postgres)"
	as_pg() { runuser -u postgres -- "$@"; }
	mkdir -p "$pgdata" && chown postgres: "$pgdata" && chmod 0700 "$pgdata"
fi
if [[ ! -s $pgdata/PG_VERSION ]]; then
	say "initialising PostgreSQL in $pgdata"
	as_pg "$pg_bin/initdb" -D "$pgdata" -U postgres -A trust -E UTF8 >"$logs/initdb.log" 2>&1 ||
		{ tail "$logs/initdb.log" >&2; die "initdb failed"; }
fi
say "starting PostgreSQL on 127.0.0.1:$pg_port"
touch "$logs/postgres.log" && { ((EUID != 0)) || chown postgres: "$logs/postgres.log"; }
as_pg "$pg_bin/pg_ctl" -D "$pgdata" -l "$logs/postgres.log" -w -t 60 \
	-o "-p $pg_port -k $pgdata -c listen_addresses=127.0.0.1" start >/dev/null
pg_started=1
as_pg "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='envfabric'" |
	grep -q 1 || as_pg "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres envfabric
export DATABASE_URL="postgresql://postgres@127.0.0.1:$pg_port/envfabric?sslmode=disable"

# --- processes ---------------------------------------------------------------------------------
declare -a cp_pids=() agent_pids=()
declare -A names=()
mkdir -p "$DATA_ROOT/run"
start() { # start NAME BINARY VAR=VALUE...: start_program, with a pid file for the operator
	start_program "$@"
	names[$started_pid]=$1
	echo "$started_pid" >"$DATA_ROOT/run/$1.pid"
}
stop_all() {
	local pid
	for pid in "${cp_pids[@]}" "${agent_pids[@]}"; do stop_pid "$pid" 30; done
	cp_pids=() agent_pids=()
	if [[ -n ${pg_started:-} ]]; then
		as_pg "$pg_bin/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null 2>&1 || true
		pg_started=""
	fi
}
# shellcheck disable=SC2317 # called from the traps below
on_signal() {
	trap - INT TERM HUP
	echo >&2
	say "stopping"
	stop_all
	say "stopped"
	exit 0
}
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'on_signal HUP' HUP
trap 'stop_all' EXIT

wait_for() { # wait_for NAME PID URL [TOKEN]
	local deadline=$((SECONDS + 60))
	until http_ok "$3" "${4:-}"; do
		kill -0 "$2" 2>/dev/null || { tail -n 30 "$logs/$1.log" >&2; die "$1 exited before $3 answered"; }
		((SECONDS < deadline)) || { tail -n 30 "$logs/$1.log" >&2; die "$1 did not answer $3 within 60s"; }
		sleep 0.2
	done
}

for i in "${!cp_ports[@]}"; do
	p=${cp_ports[$i]} name="cp$((i + 1))"
	say "starting control plane $name on 127.0.0.1:$p (gossip :$((p + 1000)))"
	start "$name" controlplane LISTEN_ADDR="127.0.0.1:$p" INSTANCE_ID="$name" \
		GOSSIP_BIND_ADDR="127.0.0.1:$((p + 1000))" GOSSIP_SEEDS="$seeds"
	cp_pids+=("$started_pid")
done
for i in "${!agent_ports[@]}"; do
	p=${agent_ports[$i]} name="agent$((i + 1))"
	say "starting agent $name on 127.0.0.1:$p (gossip :$((p + 1000)))"
	start "$name" agent AGENT_LISTEN_ADDR="127.0.0.1:$p" AGENT_ID="$name" \
		GOSSIP_BIND_ADDR="127.0.0.1:$((p + 1000))" GOSSIP_SEEDS="$seeds"
	agent_pids+=("$started_pid")
	wait_for "$name" "$started_pid" "http://127.0.0.1:$p/healthz" "$AGENT_TOKEN"
done
for i in "${!cp_ports[@]}"; do
	wait_for "cp$((i + 1))" "${cp_pids[$i]}" "http://127.0.0.1:${cp_ports[$i]}/readyz"
done

say "fleet up: control planes $(printf 'http://127.0.0.1:%s ' "${cp_ports[@]}")"
say "try: curl -s http://127.0.0.1:${cp_ports[0]}/agents | python3 -m json.tool"
say "Ctrl-C stops the fleet. Data and logs: $DATA_ROOT"

say "stop one member to watch the fleet react: kill \$(cat $DATA_ROOT/run/agent3.pid)"

# Report members that exit; stop when none is left.
while ((${#names[@]})); do
	rc=0
	wait -n -p gone "${!names[@]}" || rc=$?
	[[ -n ${gone:-} ]] || break
	say "${names[$gone]} exited (status $rc); the rest keep running (log: $logs/${names[$gone]}.log)"
	rm -f "$DATA_ROOT/run/${names[$gone]}.pid"
	unset "names[$gone]"
done
say "every member has exited"
