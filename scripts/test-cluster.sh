#!/usr/bin/env bash
# test-cluster.sh up|down|status - a real single-host SLURM for remotefn's tests.
#
# `up` installs Debian's slurmctld, slurmd, slurm-client and munge if missing, writes
# /etc/slurm, starts munged, slurmctld and one slurmd per emulated node (n1..nN, all on this
# host, more CPUs declared than the machine has, fake GPUs as GRES, memory a consumable
# resource as on most GPU clusters: CR_Core_Memory, 500 MB per CPU unless a job asks; the pmix
# MPI plugin usable with Debian's Open MPI) and waits until the nodes are idle. `down` cancels
# the jobs and stops exactly the daemons `up` started. Needs root.
#
#   REMOTEFN_CLUSTER_DIR    state, logs and pid files   (default /tmp/remotefn-cluster)
#   REMOTEFN_CLUSTER_NODES  emulated nodes              (default 3)
#   REMOTEFN_CLUSTER_CPUS   CPUs declared per node      (default 8)
#   REMOTEFN_CLUSTER_GPUS   fake GPUs per node          (default 4)
set -euo pipefail

DIR=${REMOTEFN_CLUSTER_DIR:-/tmp/remotefn-cluster}
NODES=${REMOTEFN_CLUSTER_NODES:-3}
CPUS=${REMOTEFN_CLUSTER_CPUS:-8}
GPUS=${REMOTEFN_CLUSTER_GPUS:-4}
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

say() { printf '[test-cluster] %s\n' "$*"; }
fail() { printf '[test-cluster] ERROR: %s\n' "$*" >&2; exit 1; }

# running PIDFILE NAME: the pid in PIDFILE is a live process called NAME
running() {
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

# stop PIDFILE NAME: TERM, up to 10 s, then KILL; only that process
stop() {
    if running "$1" "$2"; then
        local pid; pid=$(cat "$1")
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do running "$1" "$2" || break; sleep 0.1; done
        running "$1" "$2" && kill -KILL "$pid" 2>/dev/null || true
        say "stopped $2 ($pid)"
    fi
    rm -f "$1"
}

install_packages() {
    local missing="" package
    # libpmix-dev: SLURM's mpi/pmix plugin loads the unversioned libpmix.so it ships;
    # openmpi-bin: Debian's Open MPI, whose ranks srun starts with --mpi=pmix.
    for package in slurmctld slurmd slurm-client munge libpmix-dev openmpi-bin; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" \
            || missing="$missing $package"
    done
    [ -z "$missing" ] && return
    say "installing:$missing"
    local policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then  # no daemon starts from package scripts
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
        policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing \
        > "$DIR/apt.log" 2>&1 || { tail -20 "$DIR/apt.log"; fail "apt-get install failed"; }
    [ $policy = 1 ] && rm -f /usr/sbin/policy-rc.d
    return 0
}

start_munge() {
    if munge -n 2>/dev/null | unmunge > /dev/null 2>&1; then return; fi
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 100); do munge -n 2>/dev/null | unmunge > /dev/null 2>&1 && break; sleep 0.1; done
    munge -n | unmunge > /dev/null || fail "munged did not start"
    cp /run/munge/munged.pid "$DIR/run/munged.pid"
    say "munged started"
}

write_config() {
    local host names gres="" i k
    host=$(hostname -s)
    names="n[1-$NODES]"
    for ((k = 0; k < NODES * GPUS; k++)); do  # char devices standing in for GPUs
        [ -c "$DIR/dev/gpu$k" ] || mknod "$DIR/dev/gpu$k" c 1 3
    done
    for ((i = 0; i < NODES; i++)); do
        [ "$GPUS" -gt 0 ] && gres+="NodeName=n$((i + 1)) Name=gpu File=$DIR/dev/gpu[$((i * GPUS))-$((i * GPUS + GPUS - 1))]"$'\n'
    done
    mkdir -p /etc/slurm
    printf '%s' "$gres" > /etc/slurm/gres.conf
    cat > /etc/slurm/slurm.conf <<CONF
# remotefn test cluster (scripts/test-cluster.sh)
ClusterName=remotefn
SlurmctldHost=$host(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
TmpFS=$DIR/tmp/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
GresTypes=gpu
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
InactiveLimit=0
KillWait=2
MinJobAge=10
MailProg=/bin/true
NodeName=$names NodeHostname=$host NodeAddr=127.0.0.1 Port=[17001-$((17000 + NODES))] CPUs=$CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$CPUS ThreadsPerCore=1 RealMemory=8000 $([ "$GPUS" -gt 0 ] && echo "Gres=gpu:$GPUS") State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
}

up() {
    [ "$(id -u)" = 0 ] || fail "needs root (it installs packages and starts daemons)"
    mkdir -p "$DIR"/{state,spool,log,run,dev}
    install_packages
    start_munge
    down_daemons
    rm -rf "${DIR:?}/state/"*
    write_config
    /usr/sbin/slurmctld
    for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
    for i in $(seq 1 "$NODES"); do  # each node its own spool and TmpFS (pmix keeps files there)
        mkdir -p "$DIR/spool/n$i" "$DIR/tmp/n$i"; /usr/sbin/slurmd -N "n$i"
    done
    for _ in $(seq 300); do
        [ "$(sinfo -h -N -o '%t' | sort -u)" = idle ] && break
        sleep 0.2
    done
    [ "$(sinfo -h -N -o '%t' | sort -u)" = idle ] || { sinfo -N; fail "nodes are not idle"; }
    say "up: $NODES nodes x $CPUS CPUs, $GPUS fake GPUs each"
}

down_daemons() {
    shopt -s nullglob
    local pidfile
    for pidfile in "$DIR"/run/slurmd-*.pid; do stop "$pidfile" slurmd; done
    stop "$DIR/run/slurmctld.pid" slurmctld
}

down() {
    if running "$DIR/run/slurmctld.pid" slurmctld; then
        local jobs; jobs=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')
        if [ -n "${jobs// /}" ]; then scancel $jobs 2>/dev/null || true; fi
    fi
    down_daemons
    stop "$DIR/run/munged.pid" munged
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) sinfo -N -o '%N %c %G %t' ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
