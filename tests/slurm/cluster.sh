#!/usr/bin/env bash
# A real one-node SLURM cluster on this (Debian) machine, for tests/test_slurm.py. Needs root.
#   cluster.sh start   install slurm-wlm + munge if missing, write the config, start the daemons
#   cluster.sh stop    stop the daemons by their PID files, put the machine's own config back
# One fake GPU (GRES on /dev/null) so rules asking for `gpu: 1` are scheduled; no accounting
# daemon, so Snakemake must poll with `--slurm-status-command squeue`.
set -euo pipefail
RUN=/run/slurm
NODE=$(hostname -s)
CONFS=(/etc/slurm/slurm.conf /etc/slurm/gres.conf)
MARK="lego-test"  # in every config this script writes

# A config of ours left behind matters: with SLURM's tools installed and no controller answering,
# `scontrol show config` waits ~9 s, and the slurm executor plugin runs it whenever Snakemake
# starts, so every later snakemake call (the rest of the test suite) would wait too.
save_confs() {
    for conf in "${CONFS[@]}"; do
        if [ -e "$conf" ] && [ ! -e "$conf.lego-test-saved" ] && ! grep -qs "$MARK" "$conf"; then
            mv "$conf" "$conf.lego-test-saved"
        fi
    done
}

restore_confs() {
    for conf in "${CONFS[@]}"; do
        if grep -qs "$MARK" "$conf"; then
            rm -f "$conf"
        fi
        if [ -e "$conf.lego-test-saved" ]; then
            mv "$conf.lego-test-saved" "$conf"
        fi
    done
}

start() {
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null
    fi
    [ -s /etc/munge/munge.key ] || mungekey --create
    install -d -o munge -g munge /run/munge
    pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
    install -d -o slurm -g slurm /var/spool/slurmctld "$RUN" /var/log/slurm
    install -d /var/spool/slurmd
    local cpus mem
    save_confs
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))
    cat > /etc/slurm/slurm.conf <<CONF
ClusterName=lego-test
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=300
ReturnToService=2
SlurmctldPidFile=${RUN}/slurmctld.pid
SlurmdPidFile=${RUN}/slurmd.pid
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
GresTypes=gpu
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${cpus} Boards=1 SocketsPerBoard=1 CoresPerSocket=${cpus} ThreadsPerCore=1 RealMemory=${mem} Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
    echo "# lego-test" > /etc/slurm/gres.conf
    echo "NodeName=${NODE} Name=gpu File=/dev/null" >> /etc/slurm/gres.conf
    stop_daemons  # daemons left from an earlier run would keep the old configuration
    /usr/sbin/slurmctld
    /usr/sbin/slurmd
    for _ in $(seq 30); do
        if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed)'; then
            return 0
        fi
        sleep 1
    done
    echo "SLURM node did not become idle:" >&2
    sinfo >&2 || true
    return 1
}

stop_daemons() {
    for pidfile in "$RUN/slurmd.pid" "$RUN/slurmctld.pid"; do
        if [ -s "$pidfile" ]; then
            kill "$(cat "$pidfile")" 2>/dev/null || true
        fi
    done
    for _ in $(seq 20); do
        pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || return 0
        sleep 0.5
    done
}

stop() {
    stop_daemons
    restore_confs
}

"${1:?usage: cluster.sh start|stop}"
