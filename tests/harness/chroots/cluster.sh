#!/bin/bash
# Run a throwaway Slurm cluster inside a chroot built by build.sh (or on the host with ROOT=/).
#
#   cluster.sh up   ROOT CDIR [NODES]   NODES=1 (node "n1") or 2 ("n1" on 127.0.0.1, "n2" on 127.0.0.2)
#   cluster.sh down ROOT CDIR           stop daemons (by recorded pid) and unmount binds
#   cluster.sh env  ROOT CDIR           print how to run client commands
#   cluster.sh run  ROOT CDIR CMD...    run a client command inside the chroot with SLURM_CONF set
#
# CDIR is the cluster directory as seen *inside* ROOT (e.g. /c); everything (config,
# state, logs, munge socket+key, fake /dev/nvidiaN) lives there. Ports are picked free.
# Hooks: $CDIR/hooks/{prolog,epilog,taskprolog} dump `env | sort` into $CDIR/out/.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ACTION=${1:?action}; ROOT=${2:?root}; CDIR=${3:?cdir (path inside root)}; NODES=${4:-1}
ROOT=$(cd "$ROOT" && pwd)
H="$ROOT$CDIR"; [ "$ROOT" = / ] && H="$CDIR"
inroot() { if [ "$ROOT" = / ]; then "$@"; else chroot "$ROOT" "$@"; fi; }
crun() { inroot env SLURM_CONF="$CDIR/etc/slurm.conf" "$@"; }

free_port() {  # a TCP port free on 127.0.0.1 and 127.0.0.2 now
  python3 - <<'PY'
import socket, random
while True:
    p = random.randint(31000, 39000)
    try:
        for a in ("127.0.0.1", "127.0.0.2", "0.0.0.0"):
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((a, p)); s.close()
        print(p); break
    except OSError:
        pass
PY
}

mount_binds() {
  [ "$ROOT" = / ] && return
  for m in proc dev sys; do
    mountpoint -q "$ROOT/$m" || mount --bind "/$m" "$ROOT/$m"
  done
}
umount_binds() {
  [ "$ROOT" = / ] && return
  for m in sys dev proc; do
    if mountpoint -q "$ROOT/$m"; then umount "$ROOT/$m" || umount -l "$ROOT/$m"; fi
  done
}

wait_for() {  # wait_for SECONDS DESC CMD...
  local t=$1 what=$2; shift 2
  local end=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -ge $end ] && { echo "timeout waiting for $what (logs: $H/log)" >&2; return 1; }
    sleep 0.3
  done
}

write_config() {
  local ctld_port=$1 d1=$2 d2=$3 host; host=$(hostname -s)
  mkdir -p "$H"/{etc,state,spool/n1,spool/n2,log,dev,hooks,out,jobs,munge}
  chmod 755 "$H"
  for i in 0 1; do [ -e "$H/dev/nvidia$i" ] || mknod -m 666 "$H/dev/nvidia$i" c 195 $i; done
  cat > "$H/etc/slurm.conf" <<CONF
ClusterName=chroot$(basename "$ROOT" | tr -dc a-z0-9)
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$ctld_port
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$CDIR/munge/munge.sock
StateSaveLocation=$CDIR/state
SlurmdSpoolDir=$CDIR/spool/%n
SlurmctldPidFile=$CDIR/slurmctld.pid
SlurmdPidFile=$CDIR/slurmd-%n.pid
SlurmctldLogFile=$CDIR/log/slurmctld.log
SlurmdLogFile=$CDIR/log/slurmd-%n.log
MailProg=/bin/true
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=nohold_on_prolog_fail
JobSubmitPlugins=lua
GresTypes=gpu,shard,mig
Prolog=$CDIR/hooks/prolog
TaskProlog=$CDIR/hooks/taskprolog
Epilog=$CDIR/hooks/epilog
PrologFlags=Alloc
PrologEpilogTimeout=120
BatchStartTimeout=60
MessageTimeout=30
ReturnToService=2
SlurmdParameters=config_overrides
NodeName=n1 NodeHostname=$host NodeAddr=127.0.0.1 Port=$d1 CPUs=4 RealMemory=1000 Gres=gpu:h100:2,shard:16,mig:1g.10gb:14,mig:3g.40gb:4,mig:7g.80gb:2 State=UNKNOWN
CONF
  if [ "$NODES" = 2 ]; then
    echo "NodeName=n2 NodeHostname=$host NodeAddr=127.0.0.2 Port=$d2 CPUs=4 RealMemory=1000 Gres=gpu:h100:2,shard:16,mig:1g.10gb:14,mig:3g.40gb:4,mig:7g.80gb:2 State=UNKNOWN" >> "$H/etc/slurm.conf"
    echo "PartitionName=debug Nodes=n[1-2] Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO" >> "$H/etc/slurm.conf"
  else
    echo "PartitionName=debug Nodes=n1 Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO" >> "$H/etc/slurm.conf"
  fi
  cat > "$H/etc/gres.conf" <<CONF
# dynamic mode, as slurm-mig gres-conf writes it (one node's devices; both nodes share them)
Name=gpu Type=h100 File=$CDIR/dev/nvidia0
Name=shard Count=8 File=$CDIR/dev/nvidia0
Name=gpu Type=h100 File=$CDIR/dev/nvidia1
Name=shard Count=8 File=$CDIR/dev/nvidia1
Name=mig Type=1g.10gb Count=14 Flags=CountOnly
Name=mig Type=3g.40gb Count=4 Flags=CountOnly
Name=mig Type=7g.80gb Count=2 Flags=CountOnly
CONF
  # no cgroup tree is mounted in the chroot (plain bind of /sys); 24.11+ slurmd needs this
  # (22.05 has no "disabled" value and runs fine without cgroup.conf here)
  if [ "$(inroot /usr/sbin/slurmd -V | awk '{split($2,v,"."); print v[1]}')" -ge 23 ]; then
    echo "CgroupPlugin=disabled" > "$H/etc/cgroup.conf"
  fi
  cp "$HERE/files/job_submit.lua" "$H/etc/job_submit.lua"
  for f in prolog epilog taskprolog; do
    sed "s#@CDIR@#$CDIR#g" "$HERE/files/$f" > "$H/hooks/$f"; chmod 755 "$H/hooks/$f"
  done
}

case "$ACTION" in
up)
  [ -e "$H/cluster.pids" ] && { echo "$H/cluster.pids exists: run down first" >&2; exit 1; }
  mount_binds
  mkdir -p "$H"
  # the chroot's /etc/hosts lacks this host's name: munge then encodes 0.0.0.0 and
  # slurmctld logs "auth_p_get_host: Lookup failed for 0.0.0.0" (AllocNode=0.0.0.0)
  if [ "$ROOT" != / ] && ! inroot getent hosts "$(hostname)" >/dev/null; then
    echo "127.0.0.1 $(hostname)" >> "$ROOT/etc/hosts"
  fi
  write_config "$(free_port)" "$(free_port)" "$(free_port)"
  # munge: own key, socket, pid/log/seed in $CDIR/munge (never the host's munged)
  dd if=/dev/urandom of="$H/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$H/munge/munge.key"; chmod 700 "$H/munge"
  inroot chown -R munge:munge "$CDIR/munge"
  t0=$(date +%s.%N)
  if [ "$ROOT" = / ]; then MUNGED=(runuser -u munge -- /usr/sbin/munged); else MUNGED=(chroot --userspec=munge:munge "$ROOT" /usr/sbin/munged); fi
  setsid "${MUNGED[@]}" -F --force --socket="$CDIR/munge/munge.sock" --pid-file="$CDIR/munge/munged.pid" \
    --log-file="$CDIR/munge/munged.log" --seed-file="$CDIR/munge/munged.seed" --key-file="$CDIR/munge/munge.key" \
    > "$H/log/munged.out" 2>&1 < /dev/null &
  echo "munged $!" >> "$H/cluster.pids"
  wait_for 20 "munge socket" test -S "$H/munge/munge.sock"
  setsid bash -c "$( [ "$ROOT" = / ] || echo "chroot $ROOT") /usr/sbin/slurmctld -D -c -f $CDIR/etc/slurm.conf" \
    > "$H/log/slurmctld.out" 2>&1 < /dev/null &
  echo "slurmctld $!" >> "$H/cluster.pids"
  wait_for 60 "slurmctld" bash -c "$(declare -f inroot crun); ROOT=$ROOT CDIR=$CDIR; crun scontrol ping | grep -q UP"
  nodes=n1; [ "$NODES" = 2 ] && nodes="n1 n2"
  for n in $nodes; do
    setsid bash -c "$( [ "$ROOT" = / ] || echo "chroot $ROOT") /usr/sbin/slurmd -D -N $n -f $CDIR/etc/slurm.conf" \
      > "$H/log/slurmd-$n.out" 2>&1 < /dev/null &
    echo "slurmd-$n $!" >> "$H/cluster.pids"
  done
  for n in $nodes; do
    wait_for 90 "node $n idle" bash -c "$(declare -f inroot crun); ROOT=$ROOT CDIR=$CDIR; crun sinfo -h -N -n $n -o %T | grep -qx idle"
  done
  printf 'cluster up in %.1f s (munged..all nodes idle)\n' "$(echo "$(date +%s.%N) - $t0" | bc)"
  grep -E 'Port=|SlurmctldPort' "$H/etc/slurm.conf" | sed 's/ CPUs.*//'
  ;;
down)
  if [ -e "$H/cluster.pids" ]; then
    # slurmd first, then slurmctld, then munged; only the pids this script started
    for name in slurmd-n2 slurmd-n1 slurmctld munged; do
      pid=$(awk -v n=$name '$1==n{print $2}' "$H/cluster.pids")
      [ -n "$pid" ] || continue
      kill -TERM -- -"$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -KILL -- -"$pid" 2>/dev/null || true
    done
    rm -f "$H/cluster.pids"
  fi
  umount_binds
  ;;
clean)  # down + remove the cluster directory
  "$0" down "$ROOT" "$CDIR"; rm -rf "$H" ;;
env) echo "chroot $ROOT env SLURM_CONF=$CDIR/etc/slurm.conf <slurm command>" ;;
run) shift 3; crun "$@" ;;
*) echo "unknown action $ACTION" >&2; exit 2 ;;
esac
