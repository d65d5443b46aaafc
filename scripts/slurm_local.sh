#!/usr/bin/env bash
# A single-node SLURM cluster on this machine (slurmctld, slurmd and munge on localhost), for the slurm test tier.
#   scripts/slurm_local.sh install   install Debian's packages (root; apt-get), nothing else
#   scripts/slurm_local.sh start     write the config under $SLURM_LOCAL_DIR (default /tmp/vaesae-slurm) and start the
#                                    daemons; prints the SLURM_CONF line to export; a second start reuses them
#   scripts/slurm_local.sh stop      stop the daemons this script started
# No cgroups, no accounting (the status of jobs comes from squeue: MinJobAge keeps finished jobs listed), one
# partition "local" of one node with this machine's CPUs and most of its memory. /etc/slurm/slurm.conf becomes a
# link to the config (srun in a job reads it there) unless a real file is there already.
set -euo pipefail
dir="${SLURM_LOCAL_DIR:-/tmp/vaesae-slurm}"
conf="$dir/slurm.conf"

install() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && return 0
  [ "$(id -u)" = 0 ] || { echo "error: installing slurmctld, slurmd and munge needs root" >&2; exit 3; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
}

running() { [ -f "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null \
  && [ -f "$dir/slurmd.pid" ] && kill -0 "$(cat "$dir/slurmd.pid")" 2>/dev/null; }

start() {
  command -v slurmctld >/dev/null || { echo "error: slurmctld is not installed (scripts/slurm_local.sh install)" >&2; exit 3; }
  mkdir -p "$dir"/{state,spool,log}
  if ! running; then
    # munge: the packaged key, or one of our own
    [ -s /etc/munge/munge.key ] || { mkdir -p /etc/munge; dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
    chown munge:munge /etc/munge/munge.key 2>/dev/null || true; chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null || true
    pgrep -x munged >/dev/null || su -s /bin/sh munge -c munged 2>/dev/null || munged --force
    cpus=$(nproc); mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 3 / 4 ))
    user=$(id -un)
    cat > "$conf" <<EOT
ClusterName=vaesae
SlurmctldHost=localhost
SlurmUser=$user
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPort=${SLURM_LOCAL_PORT:-6817}
SlurmdPort=$(( ${SLURM_LOCAL_PORT:-6817} + 1 ))
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
MinJobAge=3600
MpiDefault=none
NodeName=localhost NodeHostname=$(hostname) CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOT
    # the job steps' srun reads the default place (sbatch does not pass SLURM_CONF on): point it at ours unless a
    # real configuration lives there
    if [ ! -e /etc/slurm/slurm.conf ] || [ -L /etc/slurm/slurm.conf ]; then mkdir -p /etc/slurm && ln -sfn "$conf" /etc/slurm/slurm.conf; fi
    slurmctld -f "$conf"
    slurmd -f "$conf"
  fi
  export SLURM_CONF="$conf"
  for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -qE "^idle|^mixed|^alloc"; then echo "export SLURM_CONF=$conf"; return 0; fi
    scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
    sleep 1
  done
  echo "error: the local SLURM node did not come up; see $dir/log" >&2; exit 4
}

stop() {
  for d in slurmd slurmctld; do
    [ -f "$dir/$d.pid" ] && kill "$(cat "$dir/$d.pid")" 2>/dev/null || true
  done
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
