#!/usr/bin/env bash
# Start a Slurm on this machine (tests and CI; not for production clusters): one node, or several.
#
#   sudo scripts/slurm/start.sh                      one node: this machine, all its CPUs and memory
#   sudo SEMTOK_SLURM_NODES=2 scripts/slurm/start.sh  two nodes HOST-1, HOST-2: one slurmd each
#   sudo scripts/slurm/stop.sh                       cancel every job and stop the daemons
#
# Installs the Debian packages once, runs munged, slurmctld and one slurmd per node as plain daemons
# (no systemd); they reach each other at 127.0.0.1. With several nodes, each slurmd has its own node
# name (`slurmd -N`), port, spool, pid and log file, SEMTOK_SLURM_NODE_CPUS CPUs and an equal share
# of the memory, so that a job asking for --nodes=2 runs one task on each "machine".
# Idempotent: a second call with the daemons up and the same configuration only re-checks the nodes;
# a different layout restarts the daemons with a cleared controller state.
# Environment:
#   SEMTOK_SLURM_NODES      number of nodes (default 1)
#   SEMTOK_SLURM_NODE_CPUS  CPUs of each node when there are several (default 1)
#   SEMTOK_SLURM_STATE      state, spool, pid and log files (default /var/lib/semtok-slurm)
#   SEMTOK_SLURM_PARTITION  name of the one (default) partition (default local)
#   SEMTOK_SLURM_WAIT       seconds to wait for the nodes to become idle (default 60)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="${SEMTOK_SLURM_STATE:-/var/lib/semtok-slurm}"
PARTITION="${SEMTOK_SLURM_PARTITION:-local}"
WAIT="${SEMTOK_SLURM_WAIT:-60}"
NODES="${SEMTOK_SLURM_NODES:-1}"
NODE_CPUS="${SEMTOK_SLURM_NODE_CPUS:-1}"
FIRST_PORT=6821 # slurmd of node i listens on FIRST_PORT + i - 1 (slurmctld keeps 6817)
CONF=/etc/slurm/slurm.conf
MARKER="# written by semtok scripts/slurm/start.sh"

die() {
    echo "slurm/start.sh: error: $*" >&2
    exit 1
}

alive() { # alive PIDFILE: the daemon whose pid is in PIDFILE is running
    [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

[[ "$(id -u)" == 0 ]] || die "must run as root (it installs packages and starts system daemons)"
[[ "$NODES" =~ ^[1-9][0-9]*$ ]] || die "SEMTOK_SLURM_NODES must be a positive integer, not '$NODES'"
[[ "$NODE_CPUS" =~ ^[1-9][0-9]*$ ]] || die "SEMTOK_SLURM_NODE_CPUS must be a positive integer, not '$NODE_CPUS'"

packages=()
command -v munged >/dev/null || packages+=(munge)
command -v slurmctld >/dev/null || packages+=(slurmctld)
command -v slurmd >/dev/null || packages+=(slurmd)
command -v sbatch >/dev/null || packages+=(slurm-client)
if ((${#packages[@]})); then
    command -v apt-get >/dev/null || die "missing ${packages[*]} and no apt-get to install them"
    echo "slurm/start.sh: installing ${packages[*]}"
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then # keep the packages from starting their daemons themselves
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${packages[@]}"
fi

host="$(hostname -s)"
[[ -n "$host" ]] || die "this machine has no hostname"
hardware="$(slurmd -C | head -n 1 | tr ' ' '\n' | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore|RealMemory)=' | tr '\n' ' ')"
[[ "$hardware" == *CPUs=* ]] || die "'slurmd -C' did not report the hardware of this machine"

# Node names and their NodeName lines: the machine itself, or HOST-1..HOST-N sharing its memory.
if ((NODES == 1)); then
    names=("$host")
    node_lines="NodeName=$host NodeAddr=127.0.0.1 NodeHostname=$host Port=$FIRST_PORT ${hardware% } State=UNKNOWN"
    nodelist="$host"
else
    memory="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hardware")"
    names=()
    node_lines=""
    for ((i = 1; i <= NODES; i++)); do
        names+=("$host-$i")
        node_lines+="NodeName=$host-$i NodeAddr=127.0.0.1 NodeHostname=$host Port=$((FIRST_PORT + i - 1))"
        node_lines+=" CPUs=$NODE_CPUS RealMemory=$((memory / NODES)) State=UNKNOWN"$'\n'
    done
    node_lines="${node_lines%$'\n'}"
    nodelist="$host-[1-$NODES]"
fi

if [[ -e "$CONF" ]] && [[ "$(head -n 1 "$CONF")" != "$MARKER"* ]]; then
    die "$CONF exists and was not written by this script; refusing to overwrite a real Slurm configuration"
fi
mkdir -p /etc/slurm "$STATE/ctld"
for name in "${names[@]}"; do mkdir -p "$STATE/d/$name"; done
template="$(sed -e "s|@HOST@|$host|g" -e "s|@STATE@|$STATE|g" -e "s|@PARTITION@|$PARTITION|g" \
    -e "s|@NODELIST@|$nodelist|g" "$HERE/slurm.conf.in")"
new_conf="${template/@NODES@/$node_lines}"
clear_state=()
if [[ ! -e "$CONF" ]] || [[ "$(cat "$CONF")" != "$new_conf" ]]; then
    if alive "$STATE/slurmctld.pid" || compgen -G "$STATE/slurmd*.pid" >/dev/null; then
        echo "slurm/start.sh: configuration changed; restarting the daemons"
        "$HERE/stop.sh"
    fi
    printf '%s\n' "$new_conf" >"$CONF"
    clear_state=(-c) # jobs and nodes of another layout must not come back
fi

# munge: one key shared by every daemon of this machine.
if [[ ! -s /etc/munge/munge.key ]]; then
    echo "slurm/start.sh: creating /etc/munge/munge.key"
    install -d -o munge -g munge -m 0700 /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
fi
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    echo "slurm/start.sh: starting munged"
    runuser -u munge -- munged
    touch "$STATE/munged.ours" # stop.sh stops munged only when this script started it
fi
munge -n | unmunge >/dev/null || die "munged does not answer (see /var/log/munge/munged.log)"

if ! alive "$STATE/slurmctld.pid"; then
    echo "slurm/start.sh: starting slurmctld ${clear_state[*]}"
    slurmctld "${clear_state[@]}"
fi
for name in "${names[@]}"; do
    if ! alive "$STATE/slurmd-$name.pid"; then
        echo "slurm/start.sh: starting slurmd for node $name"
        slurmd -N "$name"
    fi
done

echo "slurm/start.sh: waiting up to ${WAIT}s for node(s) $nodelist to become idle"
for ((t = 0; t < WAIT; t++)); do
    states="$(sinfo -h -N -n "$nodelist" -o '%T' 2>/dev/null | sort -u | tr '\n' ' ' || true)"
    ready="$(sinfo -h -N -n "$nodelist" -t idle,mixed,allocated -o '%N' 2>/dev/null | sort -u | wc -l || true)"
    if [[ "$ready" == "$NODES" ]]; then
        sinfo
        exit 0
    fi
    sleep 1
done
sinfo || true
die "node(s) $nodelist are '${states:-unknown}' after ${WAIT}s (logs: $STATE/slurmctld.log, $STATE/slurmd-*.log)"
