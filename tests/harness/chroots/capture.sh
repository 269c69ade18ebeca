#!/bin/bash
# capture.sh ROOT CDIR OUTDIR : runs the fixture scenarios on a 2-node cluster already
# started with `cluster.sh up ROOT CDIR 2`, writes raw outputs under OUTDIR.
set -uo pipefail
ROOT=$1; CDIR=$2; OUT=$3; mkdir -p "$OUT"
H="$ROOT$CDIR"; [ "$ROOT" = / ] && H="$CDIR"
c() { if [ "$ROOT" = / ]; then env SLURM_CONF=$CDIR/etc/slurm.conf "$@"; else chroot "$ROOT" env SLURM_CONF=$CDIR/etc/slurm.conf "$@"; fi; }
sub() { c sbatch --parsable -o $CDIR/jobs/%j.out "$@" | cut -d';' -f1; }
state() { c scontrol show job -o "$1" | grep -o 'JobState=[A-Z_]*' | cut -d= -f2; }
wait_running() { for _ in $(seq 100); do [ "$(state $1)" = RUNNING ] && { sleep 1; return 0; }; sleep 0.3; done; echo "job $1 not running: $(state $1)" >&2; c scontrol show job -o $1 >&2; }
capture() {  # capture LABEL JOBID
  local L=$1 J=$2; local D="$OUT/$L"; mkdir -p "$D"
  echo "$J" > "$D/jobid"
  c scontrol show job -d -o "$J" > "$D/scontrol-show-job-d-o.txt" 2>&1
  c scontrol show job -d "$J" > "$D/scontrol-show-job-d.txt" 2>&1
  c scontrol --json show job "$J" > "$D/scontrol-json-show-job.json" 2>&1
  c scontrol show job --json "$J" > "$D/scontrol-show-job-json-suffix.json" 2>&1
  c squeue --json -j "$J" > "$D/squeue-json-j.json" 2>&1
  c squeue --json > "$D/squeue-json-all.json" 2>&1
  c scontrol show node -d -o > "$D/scontrol-show-node-d-o.txt" 2>&1
  c sinfo --json > "$D/sinfo-json.json" 2>&1
  sleep 0.5
  cp "$H"/out/prolog-$J-* "$D/" 2>/dev/null
}
cancel_all() { c scancel --user=root; for _ in $(seq 100); do [ -z "$(c squeue -h)" ] && break; sleep 0.3; done; sleep 1; }
c scontrol --version > "$OUT/version.txt"

# a/b: GPU 0 of n1 filled by a blocker (7g.80gb -> shard:8), so the 3g.40gb job lands on GPU 1
B=$(sub -w n1 -J blocker --gres=mig:7g.80gb:1 --wrap 'sleep 300'); wait_running $B; capture a0-blocker $B
A=$(sub -w n1 --gres=mig:3g.40gb:1 --wrap 'sleep 60'); wait_running $A; capture a-mig3g-gpu1 $A
HB=$(sub -w n1 --gres=mig:3g.40gb:1 -J 'x JOB_GRES=mig:7g.80gb:1 GRES=shard:8(IDX:1)' --comment 'GRES=gpu:1(IDX:0)' --wrap 'sleep 60')
wait_running $HB; capture b-hostile $HB
cancel_all
# c1: 2 nodes, same GPU index on both
J=$(sub -N2 --gres=mig:3g.40gb:1 --wrap 'sleep 60'); wait_running $J; capture c1-2node-same-idx $J
cancel_all
# c2: 2 nodes, different GPU index (n1 GPU0 full)
B=$(sub -w n1 -J blocker --gres=mig:7g.80gb:1 --wrap 'sleep 300'); wait_running $B
J=$(sub -N2 --gres=mig:3g.40gb:1 --wrap 'sleep 60'); wait_running $J; capture c2-2node-diff-idx $J
cancel_all
# d: gpu:1 (on n1 with GPU 0 full of shards -> shows what happens)
J=$(sub -w n1 --gres=gpu:1 --wrap 'sleep 60'); wait_running $J; capture d-gpu1 $J
# e: no gres
J=$(sub -w n1 --wrap 'sleep 60'); wait_running $J; capture e-nogres $J
cancel_all
# f: two-profile request (job_submit dump) + taskprolog for batch step and srun -n2 step
J=$(sub -w n1 -n2 --gres=mig:3g.40gb:1,mig:1g.10gb:2 --wrap 'env | sort > '$CDIR'/out/batchenv-$SLURM_JOB_ID; srun -n2 sh -c "env | sort > '$CDIR'/out/srunenv-\$SLURM_JOB_ID-\$SLURM_PROCID"; sleep 20')
wait_running $J; sleep 3; capture f-two-profiles-srun-n2 $J
cp "$H"/out/taskprolog-$J-* "$H"/out/batchenv-$J "$H"/out/srunenv-$J-* "$OUT/f-two-profiles-srun-n2/" 2>/dev/null
cancel_all
# g: requeue from the Prolog + StartTime=now+30
J=$(sub -w n1 --comment requeue-test --gres=mig:1g.10gb:1 --wrap 'echo batch-ran; sleep 5')
D="$OUT/g-requeue"; mkdir -p "$D"; echo $J > $D/jobid
t0=$(date +%s)
for i in $(seq 60); do echo "t+$(( $(date +%s) - t0 ))s $(c scontrol show job -o $J | grep -oE '(JobState|Reason|Restarts|BeginTime|StartTime|Comment)=[^ ]*' | tr '\n' ' ')" >> $D/timeline.txt
  [ "$(state $J)" = COMPLETED ] && break; sleep 2; done
c scontrol show job -d -o $J > $D/scontrol-final.txt
cp "$H"/out/requeue-$J-* "$H"/out/prolog-$J-* "$H"/out/epilog-$J-* "$H"/jobs/$J.out "$D/" 2>/dev/null
cancel_all
# g2: requeue from the Prolog without touching StartTime: what begin time does Slurm set?
J=$(sub -w n1 --comment requeue-only --wrap 'echo batch-ran')
D="$OUT/g2-requeue-only"; mkdir -p "$D"; echo $J > $D/jobid; t0=$(date +%s)
for i in $(seq 8); do echo "t+$(( $(date +%s) - t0 ))s now=$(date +%FT%T) $(c scontrol show job -o $J | grep -oE '(JobState|Reason|Restarts|EligibleTime|StartTime)=[^ ]*' | tr '\n' ' ')" >> $D/timeline.txt; sleep 2; done
c scontrol show job -d -o $J > $D/scontrol-final.txt
cp "$H"/out/requeue-$J-* "$H"/out/prolog-$J-* "$H"/out/epilog-$J-* "$D/" 2>/dev/null
cancel_all
grep -h JOBSUBMIT-DUMP "$H/log/slurmctld.log" > "$OUT/job_submit-lua-dump.log"
cp "$H/etc/slurm.conf" "$H/etc/gres.conf" "$H/etc/job_submit.lua" "$OUT/"
echo done
