#!/usr/bin/env bash
# Stop the Slurm started by scripts/slurm/start.sh: cancel every job, then stop every slurmd,
# slurmctld and (when start.sh started it) munged, by the pids in their pid files. Safe to call when
# nothing runs.
# Environment: SEMTOK_SLURM_STATE as for start.sh.
set -uo pipefail

STATE="${SEMTOK_SLURM_STATE:-/var/lib/semtok-slurm}"

if [[ "$(id -u)" != 0 ]]; then
    echo "slurm/stop.sh: error: must run as root" >&2
    exit 1
fi

stop() { # stop NAME PIDFILE: SIGTERM the daemon, SIGKILL it after 15 s
    local pid
    [[ -s "$2" ]] && pid="$(cat "$2")" && kill -0 "$pid" 2>/dev/null || return 0
    echo "slurm/stop.sh: stopping $1 (pid $pid)"
    kill "$pid"
    for _ in $(seq 30); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.5
    done
    kill -9 "$pid" 2>/dev/null || true
}

if [[ -s "$STATE/slurmctld.pid" ]] && kill -0 "$(cat "$STATE/slurmctld.pid")" 2>/dev/null; then
    jobs="$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')"
    if [[ -n "${jobs// /}" ]]; then
        echo "slurm/stop.sh: cancelling jobs $jobs"
        # shellcheck disable=SC2086  # one argument per job id
        scancel $jobs
        for _ in $(seq 20); do
            [[ -z "$(squeue -h -t PENDING,RUNNING,COMPLETING -o %A 2>/dev/null)" ]] && break
            sleep 0.5
        done
    fi
fi
for pidfile in "$STATE"/slurmd*.pid; do # slurmd-NODE.pid (and slurmd.pid of older layouts)
    [[ -e "$pidfile" ]] || continue
    name="${pidfile##*/}"
    stop "${name%.pid}" "$pidfile"
    rm -f "$pidfile"
done
stop slurmctld "$STATE/slurmctld.pid"
if [[ -e "$STATE/munged.ours" ]]; then
    stop munged /run/munge/munged.pid
    rm -f "$STATE/munged.ours"
fi
