#!/usr/bin/env bash
# Start a single-node SLURM cluster on loopback (munge, mariadb, slurmdbd, slurmctld, slurmd) for tests and
# demos. Idempotent: a daemon already running from this state directory is left alone. Needs root and the
# Debian packages slurmctld slurmd slurm-client munge slurmdbd mariadb-server. Prints the line to export.
#   bash slurm/start.sh [STATE_DIR]    (default $RETRIEVAL_EXP_SLURM_STATE or /tmp/retrieval_exp_slurm)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
state="${1:-${RETRIEVAL_EXP_SLURM_STATE:-/tmp/retrieval_exp_slurm}}"
ctld_port=6817 slurmd_port=6818 dbd_port=6819 db_port=3307
node="$(hostname -s)"

running() { [ -f "$state/$1.pid" ] && kill -0 "$(cat "$state/$1.pid")" 2>/dev/null; }
wait_for() {  # wait_for WHAT COMMAND...: up to 30 s
    local what="$1"; shift
    for _ in $(seq 60); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
    echo "error: $what did not come up; see $state/log" >&2; exit 1
}

mkdir -p "$state"/{ctld,spool,log,munge,mysql}
chmod 755 "$state"   # the daemons run as slurm, munge and mysql
chown slurm:slurm "$state"/{ctld,spool,log}
chown munge:munge "$state/munge" && chmod 700 "$state/munge"
chown mysql:mysql "$state/mysql"

fill() {  # fill TEMPLATE OUTPUT: the @...@ placeholders
    # slurmd -C: CPUs/sockets/cores/threads and RealMemory, less 1 GiB for the system
    local resources
    resources="$(slurmd -C | head -1 | tr ' ' '\n' | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore|RealMemory)=' \
        | awk -F= '$1 == "RealMemory" { $2 = $2 > 2048 ? $2 - 1024 : $2 } { printf "%s=%s ", $1, $2 }')"
    sed -e "s|@STATE@|$state|g" -e "s|@NODE@|$node|g" -e "s|@CTLD_PORT@|$ctld_port|g" \
        -e "s|@SLURMD_PORT@|$slurmd_port|g" -e "s|@DBD_PORT@|$dbd_port|g" -e "s|@DB_PORT@|$db_port|g" \
        -e "s|@RESOURCES@|$resources|g" "$1" > "$2"
}
fill "$here/slurm.conf.in" "$state/slurm.conf"
fill "$here/slurmdbd.conf.in" "$state/slurmdbd.conf"
chown slurm:slurm "$state/slurmdbd.conf" && chmod 600 "$state/slurmdbd.conf"
export SLURM_CONF="$state/slurm.conf"

if ! pgrep -x munged >/dev/null; then
    mkdir -p /run/munge && chown munge:munge /run/munge
    runuser -u munge -- munged --log-file="$state/munge/munged.log" --seed-file="$state/munge/munged.seed" \
        --pid-file="$state/munge/munged.pid"
fi

if ! running mysql/mariadb; then
    [ -d "$state/mysql/mysql" ] || mariadb-install-db --user=mysql --datadir="$state/mysql" >"$state/log/mariadb-install.log" 2>&1
    # loopback only, for the test cluster's accounting: no grant tables, so slurmdbd needs no password
    setsid mariadbd --user=mysql --datadir="$state/mysql" --socket="$state/mysql/mysql.sock" --bind-address=127.0.0.1 \
        --port="$db_port" --skip-grant-tables --pid-file="$state/mysql/mariadb.pid" \
        --log-error="$state/mysql/mariadb.log" </dev/null >/dev/null 2>&1 &
    wait_for mariadb mariadb-admin --socket="$state/mysql/mysql.sock" ping
fi
running slurmdbd || slurmdbd   # reads slurmdbd.conf beside $SLURM_CONF
wait_for slurmdbd bash -c "exec 3<>/dev/tcp/127.0.0.1/$dbd_port"
running slurmctld || slurmctld -f "$state/slurm.conf"
running slurmd || slurmd -f "$state/slurm.conf"
wait_for "the node" bash -c "sinfo -h -N -o %t | grep -qE '^(idle|mix|alloc)'"
wait_for sacct sacct -n -X
echo "export SLURM_CONF=$SLURM_CONF"
