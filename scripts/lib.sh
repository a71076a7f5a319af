#!/usr/bin/env bash
# Shared helpers for Switchyard's scripts (test, demo, bench) and CI.
#
# Source it from a script:     . "$(dirname "$0")/lib.sh"
# Or run a function directly:  scripts/lib.sh install
#                              scripts/lib.sh pg_start /tmp/pg 15432 15433
#                              scripts/lib.sh pg_stop /tmp/pg
#                              scripts/lib.sh install_bench
#
# Everything here is idempotent: installing twice costs a few checks, not a
# reinstall. A fresh CI machine needs only Rust (and apt, sudo if not root).
#
# The PostgreSQL setup (postgresql.conf additions, pg_hba.conf, roles) is the
# one the Rust test bed uses: both read tests/pg/.

if [[ -n "${SWITCHYARD_LIB_SOURCED:-}" ]]; then
    return 0
fi
SWITCHYARD_LIB_SOURCED=1

SWITCHYARD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_VERSION="${PG_VERSION:-15}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/${PG_VERSION}/bin}"
SWITCHYARD_VENV="${SWITCHYARD_VENV:-$SWITCHYARD_ROOT/.venv}"
SWITCHYARD_NODE_DIR="$SWITCHYARD_ROOT/tests/clients/node"
# Patroni from PyPI (Debian's 3.0.2 lacks `before_stop`), in a venv outside
# the checkout so that the `postgres` user, which runs Patroni, can reach it
# whatever the checkout's permissions. The version is in the path: changing
# it makes a new venv instead of mutating one a concurrent run may be using.
SWITCHYARD_PATRONI_VERSION="${SWITCHYARD_PATRONI_VERSION:-4.1.5}"
SWITCHYARD_PATRONI_VENV="${SWITCHYARD_PATRONI_VENV:-/opt/switchyard/patroni-$SWITCHYARD_PATRONI_VERSION}"
export PG_BIN

# ---------------------------------------------------------------- output

if [[ -t 2 ]]; then
    _sy_bold=$'\033[1m' _sy_red=$'\033[31m' _sy_reset=$'\033[0m'
else
    _sy_bold='' _sy_red='' _sy_reset=''
fi

# log MESSAGE: a progress line on stderr.
log() { printf '%s==> %s%s\n' "$_sy_bold" "$*" "$_sy_reset" >&2; }

# die MESSAGE: print an error and exit 1.
die() {
    printf '%serror: %s%s\n' "$_sy_red" "$*" "$_sy_reset" >&2
    exit 1
}

# as_root CMD...: run a command as root (directly, or with sudo).
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo -n "$@" || die "need root for: $* (sudo -n failed)"
    else
        die "need root for: $*"
    fi
}

# ---------------------------------------------------------------- apt

# pkg_installed PKG: whether a Debian package is fully installed.
pkg_installed() {
    dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null | grep -qx installed
}

_sy_apt_updated=''

# apt_install PKG...: install the packages that are missing. Waits for a
# concurrent apt/dpkg run instead of failing on its lock.
apt_install() {
    local missing=() p
    for p in "$@"; do
        pkg_installed "$p" || missing+=("$p")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null || die "apt-get not found; install manually: ${missing[*]}"
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 -q)
    if [[ -z $_sy_apt_updated ]]; then
        log "apt-get update"
        as_root "${apt[@]}" update >/dev/null
        _sy_apt_updated=1
    fi
    log "apt-get install ${missing[*]}"
    as_root "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null
}

# ---------------------------------------------------------------- prerequisites

# install_postgres: PostgreSQL server binaries and client tools (psql,
# pgbench). On a machine without postgresql-common yet, Debian's automatic
# "main" cluster on port 5432 is switched off first; where one exists it is
# left alone: the test bed uses its own clusters on free ports.
install_postgres() {
    if ! pkg_installed postgresql-common && [[ ! -e /etc/postgresql-common/createcluster.conf ]]; then
        as_root mkdir -p /etc/postgresql-common
        echo 'create_main_cluster = false' | as_root tee /etc/postgresql-common/createcluster.conf >/dev/null
    fi
    # openssl: the TLS tests (tests/tests/tls.rs) make their certificates with its CLI.
    apt_install "postgresql-${PG_VERSION}" "postgresql-client-${PG_VERSION}" openssl
    [[ -x $PG_BIN/postgres && -x $PG_BIN/pgbench ]] || die "PostgreSQL binaries missing in $PG_BIN"
}

# install_java: pgjdbc and a JDK whose `java` runs single-file programs
# (needs Java 11+ with the jdk.compiler module, i.e. a JDK, not a JRE).
install_java() {
    apt_install libpostgresql-jdbc-java
    if ! command -v java >/dev/null || ! java --list-modules 2>/dev/null | grep -q '^jdk.compiler@'; then
        apt_install default-jdk-headless
    fi
}

# install_node: node and npm, then node-postgres from the committed lock file.
install_node() {
    command -v node >/dev/null || apt_install nodejs
    command -v npm >/dev/null || apt_install npm
    if [[ ! -d $SWITCHYARD_NODE_DIR/node_modules/pg ||
        $SWITCHYARD_NODE_DIR/package-lock.json -nt $SWITCHYARD_NODE_DIR/node_modules/.package-lock.json ]]; then
        log "npm ci (tests/clients/node)"
        (cd "$SWITCHYARD_NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error)
    fi
}

# install_python: a venv at $SWITCHYARD_VENV with psycopg 3 (binary wheels) and
# kubernetes-validate (the Kubernetes JSON schemas tests/tests/kubernetes.rs validates the
# manifests of examples/kubernetes against; PyYAML comes with it).
SWITCHYARD_KUBERNETES_VALIDATE_VERSION=1.37.0
install_python() {
    local check="import importlib.metadata as m, psycopg, yaml; assert m.version('kubernetes-validate') == '$SWITCHYARD_KUBERNETES_VALIDATE_VERSION'"
    if "$SWITCHYARD_VENV/bin/python" -c "$check" 2>/dev/null; then
        return 0
    fi
    if ! "$SWITCHYARD_VENV/bin/python" -c 'import psycopg' 2>/dev/null; then
        local python=/usr/bin/python3
        [[ -x $python ]] || python="$(command -v python3 || true)"
        if [[ -z $python ]]; then
            apt_install python3
            python=/usr/bin/python3
        fi
        if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
            apt_install python3-venv
        fi
        log "creating $SWITCHYARD_VENV with psycopg 3"
        rm -rf "$SWITCHYARD_VENV"
        "$python" -m venv "$SWITCHYARD_VENV"
        "$SWITCHYARD_VENV/bin/python" -m pip install --quiet --disable-pip-version-check 'psycopg[binary]>=3.1,<4'
    fi
    log "installing kubernetes-validate $SWITCHYARD_KUBERNETES_VALIDATE_VERSION into $SWITCHYARD_VENV"
    "$SWITCHYARD_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "kubernetes-validate==$SWITCHYARD_KUBERNETES_VALIDATE_VERSION"
    "$SWITCHYARD_VENV/bin/python" -c "$check" || die "psycopg or kubernetes-validate did not install into $SWITCHYARD_VENV"
}

# install_etcd: etcd (Debian's etcd-server) for Patroni. The test bed and
# the demo run private etcds on free loopback ports and never use the
# system service; where systemd runs, the service Debian enables on install
# is stopped and disabled right after that install (so it does not hold
# 2379/2380 for nothing). An etcd that was already installed is left as it is.
install_etcd() {
    if ! pkg_installed etcd-server; then
        apt_install etcd-server
        if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
            as_root systemctl disable --now etcd.service >/dev/null 2>&1 || true
        fi
    fi
    [[ -x /usr/bin/etcd ]] || die "etcd missing in /usr/bin after installing etcd-server"
}

# install_patroni: a venv with patroni[etcd3,psycopg3]==$SWITCHYARD_PATRONI_VERSION
# at $SWITCHYARD_PATRONI_VENV, made with Debian's /usr/bin/python3 (not a
# pyenv or other python under /root, which the `postgres` user cannot run)
# and readable by everyone. A venv that is missing, broken or half-made (an
# interrupted install) fails the check below and is made again from scratch.
install_patroni() {
    local venv=$SWITCHYARD_PATRONI_VENV want=$SWITCHYARD_PATRONI_VERSION
    local piplog="${TMPDIR:-/tmp}/switchyard-patroni-pip.log"
    local check="import importlib.metadata as m, psycopg, etcd; assert m.version('patroni') == '$want'"
    if [[ -x $venv/bin/patroni ]] && "$venv/bin/python" -c "$check" 2>/dev/null; then
        return 0
    fi
    [[ -x /usr/bin/python3 ]] || apt_install python3
    /usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
    log "creating $venv with patroni[etcd3,psycopg3]==$want"
    as_root mkdir -p "$(dirname "$venv")"
    as_root chmod 755 "$(dirname "$venv")"
    as_root rm -rf "$venv"
    (
        umask 022
        as_root /usr/bin/python3 -m venv "$venv" &&
            as_root "$venv/bin/pip" install --quiet --disable-pip-version-check \
                "patroni[etcd3,psycopg3]==$want"
    ) >"$piplog" 2>&1 || die "installing patroni into $venv failed; see $piplog"
    as_root chmod -R a+rX "$venv"
    "$venv/bin/python" -c "$check" || die "patroni $want did not install into $venv; see $piplog"
    if [[ $(id -u) -eq 0 ]] && id postgres >/dev/null 2>&1; then
        runuser -u postgres -- "$venv/bin/patroni" --version >/dev/null ||
            die "the postgres user cannot run $venv/bin/patroni"
    fi
}

# install_rust_extras: the wasm target for plugins, and fmt/clippy for CI.
install_rust_extras() {
    command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs)"
    if command -v rustup >/dev/null; then
        if ! rustup target list --installed | grep -qx wasm32-wasip2; then
            log "rustup target add wasm32-wasip2"
            rustup target add wasm32-wasip2
        fi
        local c
        for c in rustfmt clippy; do
            if ! rustup component list --installed | grep -q "^$c"; then
                log "rustup component add $c"
                rustup component add "$c"
            fi
        done
    fi
}

# install_bench: what scripts/bench needs besides PostgreSQL and pgbench: PgBouncer (the
# comparison), valgrind (callgrind_control: instructions per transaction), sysstat
# (pidstat: CPU shares) and strace (strace -c: system calls per transaction). The bench runs private PgBouncers on free ports; where systemd
# runs, the service Debian enables on install (port 6432, the demo's) is stopped and
# disabled right after that install.
install_bench() {
    install_postgres
    if ! pkg_installed pgbouncer; then
        apt_install pgbouncer
        if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
            as_root systemctl disable --now pgbouncer.service >/dev/null 2>&1 || true
        fi
    fi
    apt_install valgrind sysstat strace
}

# install_systemd_tools: `systemd-analyze`, which checks examples/systemd's unit
# (tests/tests/service_manager.rs); nothing is started.
install_systemd_tools() {
    command -v systemd-analyze >/dev/null || apt_install systemd
}

# install: everything the build, the tests (tests/tests/bench.rs runs the benchmark), the
# demo and the bench need.
install() {
    log "checking prerequisites"
    install_postgres
    install_bench
    install_java
    install_node
    install_python
    install_etcd
    install_patroni
    install_systemd_tools
    install_rust_extras
}

# ---------------------------------------------------------------- build

# build_proxy: the proxy in release mode, for the demo and the bench; waits if another cargo
# holds the build lock; prints the binary's path.
build_proxy() {
    command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs)"
    log "cargo build --release -p switchyard"
    (cd "$SWITCHYARD_ROOT" && cargo build --release -p switchyard) >&2
    echo "${CARGO_TARGET_DIR:-$SWITCHYARD_ROOT/target}/release/switchyard"
}

# build_tool NAME [release]: a program of the test bed (tests/src/bin/NAME), in the dev
# profile (the one the tests build too) or in release; prints its path.
build_tool() {
    local name=$1 profile=${2:-debug} flags=()
    command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs)"
    [[ $profile == release ]] && flags=(--release)
    log "cargo build${flags[*]:+ ${flags[*]}} -p switchyard-tests --bin $name"
    (cd "$SWITCHYARD_ROOT" && cargo build -q "${flags[@]}" -p switchyard-tests --bin "$name") >&2
    echo "${CARGO_TARGET_DIR:-$SWITCHYARD_ROOT/target}/$profile/$name"
}

# ---------------------------------------------------------------- PostgreSQL

# as_pg CMD...: run a command as the OS user that owns test clusters
# (`postgres` when we are root, since initdb and postgres refuse root).
as_pg() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# pg_wait_streaming DIR PRIMARY_PORT: wait until the primary has a streaming
# replica.
pg_wait_streaming() {
    local dir=$1 port=$2 i n
    for ((i = 0; i < 300; i++)); do
        n=$("$PG_BIN/psql" -X -At -h "$dir" -p "$port" -U postgres -d postgres \
            -c "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'" 2>/dev/null || echo 0)
        [[ $n != 0 ]] && return 0
        sleep 0.1
    done
    die "replica of $dir did not start streaming; see $dir/replica.log"
}

# pg_start DIR PRIMARY_PORT [REPLICA_PORT]: create and start a primary (and
# a streaming replica made with pg_basebackup -R) under DIR, with the test
# bed's configuration and roles (app/app owning database app, md5user/md5pass,
# trustuser, postgres/postgres). Sockets and logs are in DIR. If DIR already
# holds clusters, they are just started again.
pg_start() {
    local dir=$1 pport=$2 rport=${3:-}
    [[ -n $dir && -n $pport ]] || die "usage: pg_start DIR PRIMARY_PORT [REPLICA_PORT]"
    local pg="$SWITCHYARD_ROOT/tests/pg"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    [[ $(id -u) -eq 0 ]] && chown postgres: "$dir"
    if [[ ! -f $dir/primary/PG_VERSION ]]; then
        log "initdb $dir/primary"
        local pw="$dir/.pwfile"
        echo postgres >"$pw"
        [[ $(id -u) -eq 0 ]] && chown postgres: "$pw"
        as_pg "$PG_BIN/initdb" -D "$dir/primary" -U postgres --pwfile="$pw" \
            --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C \
            --no-sync --no-instructions >"$dir/initdb.log" || die "initdb failed; see $dir/initdb.log"
        rm -f "$pw"
        as_pg sh -c "printf '\n' >>'$dir/primary/postgresql.conf' && cat >>'$dir/primary/postgresql.conf'" \
            <"$pg/postgresql.conf"
        as_pg sh -c "cat >'$dir/primary/pg_hba.conf'" <"$pg/pg_hba.conf"
        as_pg "$PG_BIN/pg_ctl" -D "$dir/primary" -l "$dir/primary.log" -w \
            -o "-p $pport -k $dir" start >/dev/null ||
            die "primary did not start; see $dir/primary.log"
        "$PG_BIN/psql" -X -q -h "$dir" -p "$pport" -U postgres -d postgres -f "$pg/setup.sql" >/dev/null
    else
        log "starting existing primary in $dir/primary"
        as_pg "$PG_BIN/pg_ctl" -D "$dir/primary" -l "$dir/primary.log" -w \
            -o "-p $pport -k $dir" start >/dev/null ||
            die "primary did not start; see $dir/primary.log"
    fi
    log "primary on 127.0.0.1:$pport (log $dir/primary.log)"
    [[ -z $rport ]] && return 0
    if [[ ! -f $dir/replica/PG_VERSION ]]; then
        log "pg_basebackup -R $dir/replica"
        as_pg "$PG_BIN/pg_basebackup" -h "$dir" -p "$pport" -U postgres -D "$dir/replica" \
            -R -c fast -X stream --no-sync
    fi
    as_pg "$PG_BIN/pg_ctl" -D "$dir/replica" -l "$dir/replica.log" -w \
        -o "-p $rport -k $dir" start >/dev/null ||
        die "replica did not start; see $dir/replica.log"
    pg_wait_streaming "$dir" "$pport"
    log "replica on 127.0.0.1:$rport, streaming (log $dir/replica.log)"
}

# pg_stop DIR [MODE]: stop the replica and primary under DIR (MODE: fast
# (default) or immediate). Missing or stopped clusters are fine.
pg_stop() {
    local dir=$1 mode=${2:-fast} node
    [[ -n $dir ]] || die "usage: pg_stop DIR [fast|immediate]"
    for node in replica primary; do
        if [[ -f $dir/$node/postmaster.pid ]]; then
            as_pg "$PG_BIN/pg_ctl" -D "$dir/$node" -m "$mode" -w stop >/dev/null || true
        fi
    done
}

# ---------------------------------------------------------------- entry point

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
    [[ $# -ge 1 ]] || die "usage: $0 FUNCTION [ARGS...]   (e.g. install, pg_start DIR PORT [PORT], pg_stop DIR)"
    declare -F "$1" >/dev/null || die "no such function: $1"
    "$@"
fi
