#!/usr/bin/env bash
# A single-node SLURM cluster on localhost for tests/test_slurm_local.py (Debian's slurm-wlm 22.05 and munge).
#   .ci/slurm_local.sh start    install the packages if needed, write slurm.conf, start munged, slurmctld, slurmd
#   .ci/slurm_local.sh stop     stop the daemons this script started (by their pid files)
#   .ci/slurm_local.sh status   sinfo
# Needs root. State, logs and pid files live in $SLURM_LOCAL_DIR (default /tmp/slurm-local); the config is
# linked to /etc/slurm/slurm.conf, where the in-job helper looks for it (it drops SLURM_CONF). The script
# refuses to touch an /etc/slurm/slurm.conf that it did not write, so it never disturbs a real cluster.
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/tmp/slurm-local}
CONF=/etc/slurm/slurm.conf
MUNGE_PID=/run/munge/munged.pid
STATUS_SECONDS=8 # slurm-init-seconds-before-status-checks of profiles/slurm-local; MinJobAge must be >= 3x

log() { echo "slurm_local: $*" >&2; }

# A pid file's process, if it is alive and not a zombie (stopped daemons can linger as zombies).
alive_pid() {
    local pid state
    [[ -s $1 ]] || return 1
    pid=$(<"$1")
    [[ -r /proc/$pid/stat ]] || return 1
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ $state != Z && $state != X ]] || return 1
    echo "$pid"
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sinfo >/dev/null &&
        command -v munged >/dev/null; then
        return
    fi
    log "installing slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

write_conf() {
    local host mem
    host=$(hostname -s)
    if ! getent hosts "$host" >/dev/null; then
        log "adding $host to /etc/hosts"
        echo "127.0.0.1 $host" >>/etc/hosts
    fi
    # "available" (free plus reclaimable page cache), not "free": after pip installs, most memory sits in the
    # page cache and "free" can fall below what one job asks for (sbatch then rejects the job outright)
    mem=$(free -m | awk '/^Mem:/ {print int($7 * 0.8)}')
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
    cat >"$DIR/slurm.conf" <<EOF
# written by .ci/slurm_local.sh
ClusterName=ci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CommunicationParameters=NoInAddrAny
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerParameters=sched_interval=1,bf_interval=1
ReturnToService=2
MpiDefault=none
MinJobAge=$((STATUS_SECONDS * 3 > 300 ? STATUS_SECONDS * 3 : 300))
AccountingStorageType=accounting_storage/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    mkdir -p /etc/slurm
    if [[ -e $CONF || -L $CONF ]] && [[ $(readlink "$CONF" || true) != "$DIR/slurm.conf" ]]; then
        echo "slurm_local: $CONF exists and was not written by this script; not touching it" >&2
        exit 1
    fi
    ln -sfn "$DIR/slurm.conf" "$CONF"
}

start() {
    install_packages
    write_conf
    : >"$DIR/started"
    if ! alive_pid "$MUNGE_PID" >/dev/null; then
        install -d -o munge -g munge /run/munge
        runuser -u munge -- munged
        echo munged >>"$DIR/started"
    fi
    if ! alive_pid "$DIR/slurmctld.pid" >/dev/null; then
        slurmctld
        echo slurmctld >>"$DIR/started"
    fi
    if ! alive_pid "$DIR/slurmd.pid" >/dev/null; then
        slurmd
        echo slurmd >>"$DIR/started"
    fi
    local state=""
    for _ in $(seq 1 60); do
        state=$(sinfo -h -o %T 2>/dev/null || true)
        [[ $state == idle ]] && break
        sleep 0.5
    done
    if [[ $state != idle ]]; then
        log "the node is not idle after 30 s (state: '${state:-no answer}'); logs in $DIR/log"
        tail -n 20 "$DIR"/log/*.log >&2 || true
        return 1
    fi
    log "cluster up: $(sinfo -h -o '%P %D %T %c CPUs %m MB')"
}

stop_daemon() { # name pidfile
    local pid
    pid=$(alive_pid "$2") || return 0
    kill "$pid"
    for _ in $(seq 1 50); do
        alive_pid "$2" >/dev/null || return 0
        sleep 0.2
    done
    log "$1 ($pid) ignored SIGTERM for 10 s; sending SIGKILL"
    kill -9 "$pid" 2>/dev/null || true
}

stop() {
    [[ -f $DIR/started ]] || return 0
    # reverse start order; only what start() launched
    grep -qx slurmd "$DIR/started" && stop_daemon slurmd "$DIR/slurmd.pid"
    grep -qx slurmctld "$DIR/started" && stop_daemon slurmctld "$DIR/slurmctld.pid"
    grep -qx munged "$DIR/started" && stop_daemon munged "$MUNGE_PID"
    rm -f "$DIR/started"
    if [[ $(readlink "$CONF" || true) == "$DIR/slurm.conf" ]]; then
        rm -f "$CONF"
    fi
    log "stopped"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) sinfo ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
