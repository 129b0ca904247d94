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
# Gossip uses the REST/Connect port + 1000 (UDP and TCP). AGENT_TOKEN, AGENT_METRICS_TOKEN and
# GOSSIP_KEYS are made fresh for each run unless set. Control planes reach agents over mutual TLS:
# the fleet's CA is made once in $DATA_ROOT/tls/ca by bin/envfabric-ca, and every member gets a
# fresh certificate from it at each start ($DATA_ROOT/tls/certs). PostgreSQL asks for passwords
# (SCRAM-SHA-256) on every connection, made once and kept in $DATA_ROOT/secrets/: the control
# planes connect as the database's owner `envfabric`, not as the superuser.
# Logs: $DATA_ROOT/logs/<name>.log, and the terminal, prefixed.
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
export AGENT_METRICS_TOKEN="${AGENT_METRICS_TOKEN:-$(random_token)}"
export GOSSIP_KEYS="${GOSSIP_KEYS:-$(head -c 32 /dev/urandom | base64)}"
export GOSSIP_PROFILE="${GOSSIP_PROFILE:-local}"
use_pip_index
seeds=""
for p in "${cp_ports[@]}"; do seeds+="${seeds:+,}127.0.0.1:$((p + 1000))"; done

# --- PostgreSQL --------------------------------------------------------------------------------
# Password (SCRAM-SHA-256) authentication on every connection, the socket included: code that
# reaches 127.0.0.1 (a run with RUN_ALLOW_NETWORK=true, say) cannot use the database without a
# password. PostgreSQL refuses to run as root: as root, the server runs as the postgres user.
pgdata="$DATA_ROOT/pg"
secrets="$DATA_ROOT/secrets"
mkdir -p "$secrets" && chmod 0700 "$secrets"
for role in postgres envfabric; do
	[[ -s $secrets/pg-$role.password ]] || (umask 077 && random_token >"$secrets/pg-$role.password")
done
pg_super_pw="$(<"$secrets/pg-postgres.password")"
pg_app_pw="$(<"$secrets/pg-envfabric.password")"
as_pg() { "$@"; }
if ((EUID == 0)); then
	id postgres >/dev/null 2>&1 || die "running as root needs a postgres user (useradd --system postgres)"
	as_pg() { runuser -u postgres -- "$@"; }
	mkdir -p "$pgdata" && chown postgres: "$pgdata" && chmod 0700 "$pgdata"
fi
# psql_super ARGS...: psql as the superuser; the password goes through the environment, never
# the command line (which every user can read in ps).
psql_super() { PGPASSWORD="$pg_super_pw" as_pg "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
if [[ ! -s $pgdata/PG_VERSION ]]; then
	say "initialising PostgreSQL in $pgdata (password authentication)"
	pwfile="$(mktemp)"
	printf '%s\n' "$pg_super_pw" >"$pwfile"
	((EUID != 0)) || chown postgres: "$pwfile"
	as_pg "$pg_bin/initdb" -D "$pgdata" -U postgres -A scram-sha-256 --pwfile="$pwfile" -E UTF8 >"$logs/initdb.log" 2>&1 ||
		{
			rm -f "$pwfile"
			tail "$logs/initdb.log" >&2
			die "initdb failed"
		}
	rm -f "$pwfile"
fi
say "starting PostgreSQL on 127.0.0.1:$pg_port"
touch "$logs/postgres.log" && { ((EUID != 0)) || chown postgres: "$logs/postgres.log"; }
as_pg "$pg_bin/pg_ctl" -D "$pgdata" -l "$logs/postgres.log" -w -t 60 \
	-o "-p $pg_port -k $pgdata -c listen_addresses=127.0.0.1 -c password_encryption=scram-sha-256" start >/dev/null
pg_started=1
if grep -Eq '^[[:space:]]*(local|host)[^#]*[[:space:]]trust[[:space:]]*$' "$pgdata/pg_hba.conf"; then
	# A data directory from an older make fleet, which trusted every local connection: give the
	# superuser its password (trust still lets us in), then ask for passwords from now on.
	say "PostgreSQL in $pgdata trusted every local connection; switching it to password authentication"
	as_pg "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -v ON_ERROR_STOP=1 -qtA -f - <<<"ALTER ROLE postgres PASSWORD '$pg_super_pw';" >/dev/null
	as_pg sed -i -E 's/^([[:space:]]*(local|host)[^#]*[[:space:]])trust([[:space:]]*)$/\1scram-sha-256\3/' "$pgdata/pg_hba.conf"
	as_pg "$pg_bin/pg_ctl" -D "$pgdata" reload >/dev/null
fi
# The control planes' role owns the database and nothing else (the SQL goes on stdin: it holds a
# password). Objects an older run made as the superuser are handed to it.
psql_super -d postgres -f - >/dev/null <<SQL
SELECT format('CREATE ROLE envfabric LOGIN PASSWORD %L', '$pg_app_pw')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'envfabric') \gexec
ALTER ROLE envfabric LOGIN NOSUPERUSER PASSWORD '$pg_app_pw';
SELECT 'CREATE DATABASE envfabric OWNER envfabric'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'envfabric') \gexec
ALTER DATABASE envfabric OWNER TO envfabric;
SQL
psql_super -d envfabric -f - >/dev/null <<'SQL'
ALTER SCHEMA public OWNER TO envfabric;
DO $$
DECLARE r record;
BEGIN
	FOR r IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v') AND pg_get_userbyid(c.relowner) <> 'envfabric'
	LOOP
		EXECUTE format('ALTER TABLE public.%I OWNER TO envfabric', r.relname);
	END LOOP;
END $$;
SQL
export DATABASE_URL="postgresql://envfabric:$pg_app_pw@127.0.0.1:$pg_port/envfabric?sslmode=disable"

# --- certificates ------------------------------------------------------------------------------
fleet_ca "$DATA_ROOT/tls"
ca_bundle="$tls_dir/certs/ca.crt"

(umask 077 && printf '%s\n' "$AGENT_METRICS_TOKEN" >"$secrets/agent-metrics.token")

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

wait_for() { # wait_for NAME PID URL [TOKEN [CA]]
	local deadline=$((SECONDS + 60))
	until http_ok "$3" "${4:-}" "${5:-}"; do
		kill -0 "$2" 2>/dev/null || { tail -n 30 "$logs/$1.log" >&2; die "$1 exited before $3 answered"; }
		((SECONDS < deadline)) || { tail -n 30 "$logs/$1.log" >&2; die "$1 did not answer $3 within 60s"; }
		sleep 0.2
	done
}

for i in "${!cp_ports[@]}"; do
	p=${cp_ports[$i]} name="cp$((i + 1))"
	say "starting control plane $name on 127.0.0.1:$p (gossip :$((p + 1000)))"
	issue_cert controlplane "$name"
	start "$name" controlplane LISTEN_ADDR="127.0.0.1:$p" INSTANCE_ID="$name" \
		GOSSIP_BIND_ADDR="127.0.0.1:$((p + 1000))" GOSSIP_SEEDS="$seeds" "${tls_env[@]}"
	cp_pids+=("$started_pid")
done
for i in "${!agent_ports[@]}"; do
	p=${agent_ports[$i]} name="agent$((i + 1))"
	say "starting agent $name on https://127.0.0.1:$p (gossip :$((p + 1000)))"
	issue_cert agent "$name" 127.0.0.1
	start "$name" agent AGENT_LISTEN_ADDR="127.0.0.1:$p" AGENT_ID="$name" \
		GOSSIP_BIND_ADDR="127.0.0.1:$((p + 1000))" GOSSIP_SEEDS="$seeds" "${tls_env[@]}"
	agent_pids+=("$started_pid")
	wait_for "$name" "$started_pid" "https://127.0.0.1:$p/healthz" "$AGENT_METRICS_TOKEN" "$ca_bundle"
done
for i in "${!cp_ports[@]}"; do
	wait_for "cp$((i + 1))" "${cp_pids[$i]}" "http://127.0.0.1:${cp_ports[$i]}/readyz"
done

say "fleet up: control planes $(printf 'http://127.0.0.1:%s ' "${cp_ports[@]}")"
say "try: curl -s http://127.0.0.1:${cp_ports[0]}/agents | python3 -m json.tool"
say "agents speak mutual TLS; scrape one with the read-only metrics token:"
say "  curl -s --cacert $ca_bundle -H \"Authorization: Bearer \$(cat $secrets/agent-metrics.token)\" https://127.0.0.1:${agent_ports[0]}/metrics"
say "rotate a certificate while it runs: bin/envfabric-ca issue -dir $tls_dir/ca -role agent -name agent1 -host 127.0.0.1 -out $tls_dir/certs"
say "database: PGPASSWORD=\$(cat $secrets/pg-envfabric.password) psql -h 127.0.0.1 -p $pg_port -U envfabric envfabric"
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
