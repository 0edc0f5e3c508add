#!/bin/bash
# A job step that behaves like a preemptible trainer, for the SLURM fixture tests.
# Usage: signal_worker.sh EVENTS_FILE MODE
#   MODE=requeue: on SIGUSR2/SIGTERM record it, `scontrol requeue` our own job, exit 0
#                 (what submitit does on rank 0, and what a trainer must do: see the runbook).
#   MODE=exit:    on the signal record it and exit 0 without requeueing.
# The first start waits (up to 120 s) for a signal; a restarted run (SLURM_RESTART_COUNT >= 1)
# records "done" and exits at once. Every line: "<event> <epoch seconds> <details>".
events=$1
mode=$2
got=""
trap 'echo "signal $(date +%s.%N) USR2" >> "$events"; got=1' USR2
trap 'echo "signal $(date +%s.%N) TERM" >> "$events"; got=1' TERM
restart=${SLURM_RESTART_COUNT:-0}
echo "start $(date +%s.%N) job=$SLURM_JOB_ID restart=$restart node=$SLURMD_NODENAME" >> "$events"
if [ "$restart" -ge 1 ]; then
  echo "done $(date +%s.%N)" >> "$events"
  exit 0
fi
# Short sleeps: bash runs a trap only between foreground commands.
for _ in $(seq 1 1200); do
  sleep 0.1
  if [ -n "$got" ]; then
    if [ "$mode" = requeue ]; then
      # The requeue makes slurmstepd SIGTERM this step at once. Ignore it (children such as `date`
      # inherit that): a TERM landing in the `$(date ...)` below killed date and left an empty stamp.
      trap '' TERM USR2
      scontrol requeue "$SLURM_JOB_ID"
      echo "requeued $(date +%s.%N) rc=$?" >> "$events"
    else
      echo "exit $(date +%s.%N)" >> "$events"
    fi
    exit 0
  fi
done
echo "nosignal $(date +%s.%N)" >> "$events"
exit 3
