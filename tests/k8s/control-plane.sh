#!/usr/bin/env bash
# A real Kubernetes control plane for tests: etcd + kube-apiserver on 127.0.0.1.
#
#   control-plane.sh build            build kube-apiserver + kubectl (cached, once per machine)
#   control-plane.sh up      [DIR]    start etcd + kube-apiserver, print the env (idempotent)
#   control-plane.sh env     [DIR]    print DIR/env (shell exports)
#   control-plane.sh compact [DIR]    compact etcd to its current revision (to force 410 Gone)
#   control-plane.sh down    [DIR]    stop both processes and remove DIR
#   control-plane.sh build-etcd       build etcd from Go (the version k8s uses); prints its path
#   control-plane.sh regen-go-mod VERSION   rewrite apiserver/go.mod for another k8s release
#
# DIR defaults to /tmp/tabby-k8s. Several DIRs can run side by side (each gets its own ports).
# Binaries are cached outside the repo in ${TABBY_K8S_CACHE:-$HOME/.cache/tabby/k8s}/<version>/.
# Environment knobs:
#   TABBY_K8S_CACHE          cache root (see above)
#   TABBY_ETCD               etcd binary to use (default: /usr/bin/etcd from Debian's etcd-server,
#                            or, without it, one built from Go: TABBY_ETCD=$(... build-etcd))
#   TABBY_K8S_APISERVER_ARGS extra kube-apiserver flags, e.g. "--watch-cache=false"
#   TABBY_K8S_UP_TIMEOUT     seconds to wait for /readyz (default 180)
# See README.md next to this file.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODDIR="$HERE/apiserver"
DEFAULT_DIR=/tmp/tabby-k8s
PORT_RESERVATIONS=/tmp/tabby-k8s-ports # one file per port in use by some DIR (content: DIR)
MARKER=.tabby-k8s                      # a DIR we created; `down` only removes such DIRs

log() { printf '[control-plane] %s\n' "$*" >&2; }
die() { printf '[control-plane] error: %s\n' "$*" >&2; exit 1; }

k8s_version() {
	awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3; exit }
	     $1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2; exit }' "$MODDIR/go.mod"
}
VERSION="$(k8s_version)"
[[ -n "$VERSION" ]] || die "cannot read the k8s.io/kubernetes version from $MODDIR/go.mod"
CACHE="${TABBY_K8S_CACHE:-$HOME/.cache/tabby/k8s}/$VERSION"
APISERVER="$CACHE/kube-apiserver"
KUBECTL="$CACHE/kubectl"

# ---------------------------------------------------------------------------------------------
# build

go_build() { # NAME: builds ./cmd/NAME into $CACHE/NAME unless it is already there
	local name="$1" out="$CACHE/$1"
	if [[ -x "$out" ]]; then
		log "$name $VERSION: cached at $out"
		return
	fi
	command -v go >/dev/null || die "go is not installed and $out is missing"
	local minor="${VERSION#v1.}"; minor="${minor%%.*}"
	local x ldflags="-s -w"
	for x in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags+=" -X $x.gitVersion=$VERSION -X $x.gitMajor=1 -X $x.gitMinor=$minor"
		ldflags+=" -X $x.gitTreeState=clean"
	done
	local what="$name $VERSION"
	[[ "$name" == etcd ]] && what="etcd (the go.etcd.io/etcd/server/v3 that k8s $VERSION uses)"
	log "building $what with $(go env GOVERSION), modules from $(go env GOPROXY)"
	log "  (only the first time on a machine: ~15 min for kube-apiserver on 2 busy cores, then"
	log "  ~2 min for kubectl, ~2 min for etcd; the binary is cached in $CACHE)"
	local start=$SECONDS tmp="$out.tmp.$$"
	(cd "$MODDIR" && go build -mod=readonly -buildvcs=false -trimpath -ldflags="$ldflags" \
		-o "$tmp" "./cmd/$name") || { rm -f "$tmp"; die "go build of $name failed"; }
	mv -f "$tmp" "$out"
	log "built $name in $((SECONDS - start))s: $out ($(du -h "$out" | cut -f1))"
}

ensure_etcd() {
	if [[ -n "${TABBY_ETCD:-}" ]]; then
		[[ -x "$TABBY_ETCD" ]] || die "TABBY_ETCD=$TABBY_ETCD is not executable"
		return
	fi
	if [[ ! -x /usr/bin/etcd ]]; then
		if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
			log "installing etcd from Debian (etcd-server, etcd-client)"
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server etcd-client >&2 || {
				apt-get update -q >&2
				DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server etcd-client >&2
			} || log "apt-get install etcd-server failed"
		fi
		if [[ ! -x /usr/bin/etcd ]]; then
			log "no Debian etcd: building etcd from go.etcd.io/etcd/server/v3 instead"
			go_build etcd
			TABBY_ETCD="$CACHE/etcd"
		fi
		# Debian's etcd.service (2379/2380) is not used: we start our own etcd per DIR on other
		# ports. Where systemd runs, the package starts it; it does not conflict, but is not needed.
	fi
}

etcd_bin() { echo "${TABBY_ETCD:-/usr/bin/etcd}"; }

cmd_build() {
	mkdir -p "$CACHE"
	# one build at a time per cache (a developer and CI may start together)
	exec 8>"$CACHE/.build.lock"
	if ! flock -n 8; then
		log "another build holds $CACHE/.build.lock; waiting"
		flock 8
	fi
	go_build kube-apiserver
	go_build kubectl
	exec 8>&-
	ensure_etcd
	log "etcd: $("$(etcd_bin)" --version | head -1)"
}

# ---------------------------------------------------------------------------------------------
# up

port_free() { # PORT: nothing listens on it and no DIR has reserved it
	local p="$1" owner
	if [[ -e "$PORT_RESERVATIONS/$p" ]]; then
		owner="$(cat "$PORT_RESERVATIONS/$p" 2>/dev/null || true)"
		[[ -n "$owner" && -e "$owner/$MARKER" ]] && return 1
		rm -f "$PORT_RESERVATIONS/$p" # stale: its DIR is gone
	fi
	! ss -Htan "( sport = :$p )" 2>/dev/null | grep -q .
}

reserve_ports() { # DIR: prints three free ports (etcd client, etcd peer, apiserver), reserved for DIR
	local dir="$1" p ports=() tries=0
	mkdir -p "$PORT_RESERVATIONS"
	exec 9>"$PORT_RESERVATIONS/.lock"
	flock 9
	while ((${#ports[@]} < 3)); do
		((tries++ < 1000)) || die "no free ports found"
		p=$((20000 + RANDOM % 12000))
		if port_free "$p" && [[ " ${ports[*]-} " != *" $p "* ]]; then ports+=("$p"); fi
	done
	for p in "${ports[@]}"; do echo "$dir" >"$PORT_RESERVATIONS/$p"; done
	exec 9>&-
	echo "${ports[@]}"
}

release_ports() { # DIR
	local dir="$1" f
	[[ -d "$PORT_RESERVATIONS" ]] || return 0
	for f in "$PORT_RESERVATIONS"/*; do
		[[ -f "$f" && "$(cat "$f" 2>/dev/null)" == "$dir" ]] && rm -f "$f"
	done
	return 0
}

alive() { # PIDFILE
	[[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

gen_pki() { # DIR
	local pki="$1/pki"
	mkdir -p "$pki"
	(
		cd "$pki"
		openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
			-subj "/CN=tabby-test-ca" -addext "basicConstraints=critical,CA:TRUE" \
			-addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
		openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr \
			-subj "/CN=kube-apiserver" 2>/dev/null
		cat >apiserver.ext <<-EOF
			basicConstraints=CA:FALSE
			keyUsage=critical,digitalSignature,keyEncipherment
			extendedKeyUsage=serverAuth
			subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc
		EOF
		openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
			-out apiserver.crt -days 3650 -extfile apiserver.ext 2>/dev/null
		openssl genrsa -out sa.key 2048 2>/dev/null
		openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
		chmod 600 ./*.key
	)
}

write_kubeconfig() { # FILE SERVER CA TOKEN USER
	cat >"$1" <<-EOF
		apiVersion: v1
		kind: Config
		clusters:
		- name: tabby-test
		  cluster:
		    server: $2
		    certificate-authority-data: $(base64 -w0 <"$3")
		users:
		- name: $5
		  user:
		    token: $4
		contexts:
		- name: $5@tabby-test
		  context:
		    cluster: tabby-test
		    user: $5
		current-context: $5@tabby-test
	EOF
	chmod 600 "$1"
}

readyz() { # DIR: 0 when the apiserver answers /readyz with ok
	local dir="$1"
	# shellcheck disable=SC1091
	(source "$dir/env" && curl -fsS --max-time 5 --cacert "$K8S_CA" \
		-H "Authorization: Bearer $K8S_ADMIN_TOKEN" "$K8S_SERVER/readyz" 2>/dev/null | grep -qx ok)
}

spawn() { # PIDFILE LOGFILE CMD...: starts CMD in its own session, detached, its pid in PIDFILE
	local pidfile="$1" logfile="$2" i
	shift 2
	rm -f "$pidfile"
	# shellcheck disable=SC2016
	setsid bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$pidfile" "$@" \
		</dev/null >"$logfile" 2>&1 &
	for ((i = 0; i < 100; i++)); do [[ -s "$pidfile" ]] && return; sleep 0.05; done
	die "could not start $1"
}

stop_pid() { # PIDFILE
	local f="$1" pid i
	[[ -f "$f" ]] || return 0
	pid="$(cat "$f")"
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$f"
}

cmd_up() {
	local dir="${1:-$DEFAULT_DIR}"
	dir="$(realpath -m "$dir")"
	if [[ -f "$dir/env" ]] && alive "$dir/etcd.pid" && alive "$dir/kube-apiserver.pid" && readyz "$dir"; then
		log "already up in $dir"
		cat "$dir/env"
		return
	fi
	if [[ -e "$dir" ]]; then
		[[ -e "$dir/$MARKER" || -z "$(ls -A "$dir")" ]] ||
			die "$dir exists and was not made by this script; choose another DIR"
		log "$dir: stale or half-started control plane; cleaning it first"
		cmd_down "$dir"
	fi

	cmd_build
	for tool in openssl curl ss flock base64; do
		command -v "$tool" >/dev/null || die "$tool is required"
	done

	mkdir -p "$dir"
	touch "$dir/$MARKER"
	local etcd_port peer_port api_port
	read -r etcd_port peer_port api_port <<<"$(reserve_ports "$dir")"
	[[ -n "$api_port" ]] || die "could not reserve ports"
	log "starting in $dir: etcd 127.0.0.1:$etcd_port (peer $peer_port), kube-apiserver 127.0.0.1:$api_port"

	gen_pki "$dir"
	local admin_token tabby_token
	admin_token="$(openssl rand -hex 24)"
	tabby_token="$(openssl rand -hex 24)"
	# token,user,uid[,"group1,group2"]; every authenticated user also gets system:authenticated
	{
		echo "$admin_token,admin,admin,\"system:masters\""
		echo "$tabby_token,tabby,tabby"
	} >"$dir/pki/tokens.csv"
	chmod 600 "$dir/pki/tokens.csv"

	local etcd_url="http://127.0.0.1:$etcd_port" server="https://127.0.0.1:$api_port"
	cat >"$dir/env" <<-EOF
		export KUBECONFIG_ADMIN=$dir/admin.kubeconfig
		export KUBECONFIG_TABBY=$dir/tabby.kubeconfig
		export K8S_SERVER=$server
		export K8S_CA=$dir/pki/ca.crt
		export K8S_ADMIN_TOKEN=$admin_token
		export K8S_TABBY_TOKEN=$tabby_token
		export ETCD_ENDPOINT=$etcd_url
		export K8S_VERSION=$VERSION
		export KUBECTL=$KUBECTL
	EOF
	write_kubeconfig "$dir/admin.kubeconfig" "$server" "$dir/pki/ca.crt" "$admin_token" admin
	write_kubeconfig "$dir/tabby.kubeconfig" "$server" "$dir/pki/ca.crt" "$tabby_token" tabby

	# etcd: our own member, plain HTTP on loopback, data under DIR. ETCD_* variables in the
	# caller's environment (e.g. ETCD_ENDPOINT from a sourced env file) would be read as flags.
	# shellcheck disable=SC2046
	spawn "$dir/etcd.pid" "$dir/etcd.log" \
		env $(env | awk -F= '/^ETCD_/ { printf "-u %s ", $1 }') "$(etcd_bin)" --name tabby-test --data-dir "$dir/etcd" \
		--listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
		--listen-peer-urls "http://127.0.0.1:$peer_port" \
		--initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
		--initial-cluster "tabby-test=http://127.0.0.1:$peer_port" \
		--initial-cluster-state new --initial-cluster-token "tabby-$api_port" \
		--quota-backend-bytes 2147483648

	local i
	for ((i = 0; i < 100; i++)); do
		curl -fsS --max-time 2 "$etcd_url/health" 2>/dev/null | grep -q '"health":"true"' && break
		alive "$dir/etcd.pid" || { tail -20 "$dir/etcd.log" >&2; die "etcd exited (log: $dir/etcd.log)"; }
		sleep 0.2
	done
	((i < 100)) || { tail -20 "$dir/etcd.log" >&2; die "etcd not healthy after 20s"; }

	# shellcheck disable=SC2086
	spawn "$dir/kube-apiserver.pid" "$dir/kube-apiserver.log" "$APISERVER" \
		--etcd-servers="$etcd_url" \
		--bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
		--cert-dir="$dir/pki" \
		--tls-cert-file="$dir/pki/apiserver.crt" --tls-private-key-file="$dir/pki/apiserver.key" \
		--client-ca-file="$dir/pki/ca.crt" \
		--token-auth-file="$dir/pki/tokens.csv" \
		--authorization-mode=RBAC \
		--service-account-issuer=https://kubernetes.default.svc \
		--service-account-key-file="$dir/pki/sa.pub" \
		--service-account-signing-key-file="$dir/pki/sa.key" \
		--service-cluster-ip-range=10.96.0.0/16 \
		--allow-privileged=true \
		--disable-admission-plugins=ServiceAccount \
		--endpoint-reconciler-type=none \
		--profiling=false \
		${TABBY_K8S_APISERVER_ARGS:-}

	local timeout="${TABBY_K8S_UP_TIMEOUT:-180}" start=$SECONDS
	until readyz "$dir"; do
		if ! alive "$dir/kube-apiserver.pid"; then
			tail -30 "$dir/kube-apiserver.log" >&2
			die "kube-apiserver exited (log: $dir/kube-apiserver.log); clean up with: $0 down $dir"
		fi
		if ((SECONDS - start > timeout)); then
			tail -30 "$dir/kube-apiserver.log" >&2
			die "kube-apiserver not ready after ${timeout}s; clean up with: $0 down $dir"
		fi
		sleep 0.5
	done
	log "kube-apiserver $VERSION ready at $server after $((SECONDS - start))s"
	cat "$dir/env"
}

# ---------------------------------------------------------------------------------------------
# down, env, compact

cmd_down() {
	local dir="${1:-$DEFAULT_DIR}"
	dir="$(realpath -m "$dir")"
	if [[ ! -e "$dir" ]]; then
		release_ports "$dir"
		log "$dir: nothing to do"
		return
	fi
	[[ -e "$dir/$MARKER" || -z "$(ls -A "$dir")" ]] ||
		die "$dir was not made by this script; not removing it"
	stop_pid "$dir/kube-apiserver.pid"
	stop_pid "$dir/etcd.pid"
	release_ports "$dir"
	rm -rf "$dir"
	log "$dir: stopped and removed"
}

cmd_env() {
	local dir="${1:-$DEFAULT_DIR}"
	[[ -f "$dir/env" ]] || die "$dir/env not found: run $0 up $dir"
	cat "$dir/env"
}

cmd_compact() { # compacts etcd at its current revision, via etcd's JSON gateway (no etcdctl needed)
	local dir="${1:-$DEFAULT_DIR}" out rev
	[[ -f "$dir/env" ]] || die "$dir/env not found: run $0 up $dir"
	local ETCD_ENDPOINT
	ETCD_ENDPOINT="$(sed -n 's/^export ETCD_ENDPOINT=//p' "$dir/env")"
	out="$(curl -fsS --max-time 10 -X POST "$ETCD_ENDPOINT/v3/kv/range" -d '{"key":"AA=="}')" ||
		die "etcd at $ETCD_ENDPOINT did not answer"
	rev="$(sed -n 's/.*"revision":"\([0-9]*\)".*/\1/p' <<<"$out")"
	[[ -n "$rev" ]] || die "no revision in etcd's answer: $out"
	out="$(curl -sS --max-time 30 -X POST "$ETCD_ENDPOINT/v3/kv/compaction" \
		-d "{\"revision\":\"$rev\",\"physical\":true}")" || die "etcd at $ETCD_ENDPOINT did not answer"
	# compacting again at an already compacted revision is not an error for us
	if [[ "$out" == *'"error"'* && "$out" != *"has been compacted"* ]]; then
		die "compaction at revision $rev failed: $out"
	fi
	log "etcd compacted at revision $rev"
	echo "$rev"
}

# ---------------------------------------------------------------------------------------------
# regen-go-mod: point apiserver/go.mod at another release (maintainers only; needs the proxy)

cmd_regen_go_mod() {
	local v="${1:?usage: $0 regen-go-mod v1.X.Y}" modfile m staging
	[[ "$v" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || die "want a release tag like v1.36.3"
	staging="v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
	modfile="$(cd "$MODDIR" && go mod download -json "k8s.io/kubernetes@$v" |
		sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
	[[ -f "$modfile" ]] || die "cannot download k8s.io/kubernetes@$v"
	{
		sed -n '1,/^module /p' "$MODDIR/go.mod"
		echo
		grep -E '^go |^godebug ' "$modfile" | sed 'G'
		echo "require k8s.io/kubernetes $v"
		echo
		echo "replace ("
		for m in $(awk '$2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }' "$modfile"); do
			# a few staging modules (sample plugins) are never published; skip those
			if (cd "$MODDIR" && go list -m -json "$m@$staging" >/dev/null 2>&1); then
				printf '\t%s => %s %s\n' "$m" "$m" "$staging"
			fi
		done
		echo ")"
	} >"$MODDIR/go.mod.new"
	mv "$MODDIR/go.mod.new" "$MODDIR/go.mod"
	rm -f "$MODDIR/go.sum"
	(cd "$MODDIR" && go mod tidy)
	log "apiserver/go.mod now builds $v (staging modules at $staging); run $0 build"
}

cmd_build_etcd() { # etcd from the Go module, at the version this Kubernetes release uses
	mkdir -p "$CACHE"
	exec 8>"$CACHE/.build.lock"
	flock 8
	go_build etcd
	exec 8>&-
	echo "$CACHE/etcd"
}

case "${1:-}" in
build) cmd_build ;;
build-etcd) cmd_build_etcd ;;
up) cmd_up "${2:-}" ;;
down) cmd_down "${2:-}" ;;
env) cmd_env "${2:-}" ;;
compact) cmd_compact "${2:-}" ;;
regen-go-mod) cmd_regen_go_mod "${2:-}" ;;
*)
	sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
	;;
esac
