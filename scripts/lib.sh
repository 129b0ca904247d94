# lib.sh — what run.sh (make run) and fleet.sh (make fleet) share. Sourced, never run; the
# sourcing script sets `root` (the repository) and `script_name` (its prefix in messages) first.

say() { printf '%s: %s\n' "$script_name" "$*" >&2; }
die() {
	say "$*"
	exit 1
}

# prepare_binaries: the pinned uv (exported as UV_BIN), curl, and freshly built bin/agent,
# bin/controlplane, bin/envfabric-ca and bin/envfabric (the CLI).
prepare_binaries() {
	if [[ -z ${UV_BIN:-} ]]; then
		UV_BIN="$(bash "$root/scripts/install-uv.sh")"
	fi
	[[ -x $UV_BIN ]] || die "UV_BIN=$UV_BIN is not an executable"
	export UV_BIN
	command -v go >/dev/null || die "go is not on PATH; install Go (see go.mod for the version)"
	command -v curl >/dev/null || die "need curl to check health (apt-get install curl)"
	say "building bin/agent, bin/controlplane, bin/envfabric-ca and bin/envfabric"
	(cd "$root" && go build -o bin/ ./controlplane/cmd/controlplane ./agent/cmd/agent ./controlplane/cmd/envfabric-ca ./client/cmd/envfabric)
	(cd "$root" && bash agent/sandbox/stage/build.sh bin/envfabric-sandbox) # the agent's run sandbox, found next to it
}

# use_pip_index: uv never reads pip's configuration. When no index is given to uv but pip has
# one (a mirror, say), hand pip's to uv so both install from the same place.
use_pip_index() {
	[[ -z ${UV_DEFAULT_INDEX:-} ]] || return 0
	local pip_index="${PIP_INDEX_URL:-$(python3 -m pip config get global.index-url 2>/dev/null || true)}"
	if [[ -n $pip_index ]]; then
		say "using pip's package index for uv"
		export UV_DEFAULT_INDEX="$pip_index"
	fi
}

# random_token: 32 random bytes in hex, for a secret made for one run.
random_token() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }

# http_ok URL [TOKEN [CA]]: true when GET URL (with TOKEN as a bearer token; an https URL
# verified against the CA bundle CA) answers 200.
http_ok() { curl -fsS -o /dev/null --max-time 2 ${2:+-H "Authorization: Bearer $2"} ${3:+--cacert "$3"} "$1" 2>/dev/null; }

# fleet_ca DIR: the fleet's CA in DIR/ca (made once, kept across runs) and the bundle members
# trust, DIR/certs/ca.crt. issue_cert then gives each member its certificate.
fleet_ca() {
	tls_dir=$1
	if [[ ! -s $tls_dir/ca/ca.crt ]]; then
		say "making the fleet's CA in $tls_dir/ca (bin/envfabric-ca)"
		"$root/bin/envfabric-ca" init -dir "$tls_dir/ca" -name "envfabric $script_name CA" >/dev/null
	fi
	mkdir -p "$tls_dir/certs"
	"$root/bin/envfabric-ca" bundle -out "$tls_dir/certs/ca.crt" "$tls_dir/ca/ca.crt"
}

# issue_cert ROLE NAME [HOSTS]: (re-)issue NAME's certificate into $tls_dir/certs and set
# tls_env to its FLEET_TLS_* settings. Issuing again over a running member rotates its
# certificate: it is reloaded on change.
issue_cert() {
	"$root/bin/envfabric-ca" issue -dir "$tls_dir/ca" -role "$1" -name "$2" ${3:+-host "$3"} -out "$tls_dir/certs" >/dev/null
	tls_env=(FLEET_TLS_CERT="$tls_dir/certs/$2.crt" FLEET_TLS_KEY="$tls_dir/certs/$2.key" FLEET_TLS_CA="$tls_dir/certs/ca.crt")
}

# stop_pid PID [SECONDS]: SIGTERM, then SIGKILL if it has not exited after SECONDS (20).
stop_pid() {
	local pid=$1 tries=$((${2:-20} * 5)) i
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < tries; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.2
	done
	say "pid $pid did not stop within ${2:-20}s; killing it"
	kill -KILL "$pid" 2>/dev/null || true
}

# start_program NAME BINARY VAR=VALUE...: run bin/BINARY in the background with extra
# environment; its output goes to the terminal with a [NAME] prefix and to $logs/NAME.log (the
# sourcing script sets `logs`). Sets started_pid to the program's pid and log_offset to where
# this run's part of the log begins.
start_program() {
	local name=$1 bin=$2 log="$logs/$1.log"
	shift 2
	printf '\n===== %s started %s =====\n' "$name" "$(date -Is)" >>"$log"
	log_offset=$(($(stat -c %s "$log") + 1))
	# setsid: its own session, so Ctrl-C reaches only the script, which stops programs in order.
	# The process substitution keeps $! the program's own pid, so it can be signalled and waited
	# for; the log pipeline ignores INT/TERM so it lives until the program closes its output.
	setsid env "$@" "$root/bin/$bin" > >(
		trap '' INT TERM HUP
		tee -a "$log" | sed -u "s/^/[$name] /"
	) 2>&1 &
	started_pid=$!
}
