#!/usr/bin/env bash
# Start a single-node Slurm on this machine (tests and CI; not for production clusters).
#
#   sudo scripts/slurm/start.sh     install (Debian packages, once), configure, start, wait for the node
#   sudo scripts/slurm/stop.sh      cancel every job and stop the daemons
#
# Runs munged, slurmctld and slurmd as plain daemons (no systemd); they reach each other at 127.0.0.1.
# Idempotent: a second call with the daemons up and the same configuration only re-checks the node.
# Environment:
#   SEMTOK_SLURM_STATE      state, spool, pid and log files (default /var/lib/semtok-slurm)
#   SEMTOK_SLURM_PARTITION  name of the one (default) partition (default local)
#   SEMTOK_SLURM_WAIT       seconds to wait for the node to become idle (default 60)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="${SEMTOK_SLURM_STATE:-/var/lib/semtok-slurm}"
PARTITION="${SEMTOK_SLURM_PARTITION:-local}"
WAIT="${SEMTOK_SLURM_WAIT:-60}"
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

node="$(hostname -s)"
[[ -n "$node" ]] || die "this machine has no hostname"
hardware="$(slurmd -C | head -n 1 | tr ' ' '\n' | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore|RealMemory)=' | tr '\n' ' ')"
[[ "$hardware" == *CPUs=* ]] || die "'slurmd -C' did not report the hardware of this machine"

if [[ -e "$CONF" ]] && [[ "$(head -n 1 "$CONF")" != "$MARKER"* ]]; then
    die "$CONF exists and was not written by this script; refusing to overwrite a real Slurm configuration"
fi
mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d"
new_conf="$(sed -e "s|@NODE@|$node|g" -e "s|@STATE@|$STATE|g" -e "s|@PARTITION@|$PARTITION|g" \
    -e "s|@HARDWARE@|${hardware% }|g" "$HERE/slurm.conf.in")"
if [[ ! -e "$CONF" ]] || [[ "$(cat "$CONF")" != "$new_conf" ]]; then
    if alive "$STATE/slurmctld.pid" || alive "$STATE/slurmd.pid"; then
        echo "slurm/start.sh: configuration changed; restarting the daemons"
        "$HERE/stop.sh"
    fi
    printf '%s\n' "$new_conf" >"$CONF"
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
    touch "$STATE/munged.ours"  # stop.sh stops munged only when this script started it
fi
munge -n | unmunge >/dev/null || die "munged does not answer (see /var/log/munge/munged.log)"

if ! alive "$STATE/slurmctld.pid"; then
    echo "slurm/start.sh: starting slurmctld"
    slurmctld
fi
if ! alive "$STATE/slurmd.pid"; then
    echo "slurm/start.sh: starting slurmd"
    slurmd -N "$node"
fi

echo "slurm/start.sh: waiting up to ${WAIT}s for node $node to become idle"
for ((t = 0; t < WAIT; t++)); do
    state="$(sinfo -h -n "$node" -o '%T' 2>/dev/null || true)"
    if [[ "$state" == idle || "$state" == mixed || "$state" == allocated ]]; then
        sinfo
        exit 0
    fi
    sleep 1
done
sinfo || true
die "node $node is '${state:-unknown}' after ${WAIT}s (logs: $STATE/slurmctld.log, $STATE/slurmd.log)"
