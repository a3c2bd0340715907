#!/usr/bin/env bash
# Stop the test cluster started by tests/slurm/start.sh: cancel its jobs, then end exactly the daemons whose pid
# files are in $LAZYTUNE_SLURM_DIR/run (slurmd per node, slurmctld, munged). Idempotent.
#   LAZYTUNE_SLURM_DIR    state folder                          [/tmp/lazytune-slurm]
#   LAZYTUNE_SLURM_CLEAN=1  also remove the state folder (logs included)
set -uo pipefail

STATE="${LAZYTUNE_SLURM_DIR:-/tmp/lazytune-slurm}"
log() { printf '[slurm-stop] %s\n' "$*" >&2; }
# A pid counts only if it still runs the daemon its file names (a stale file's pid may have been reused).
owned() {
    local name
    name="$(basename "$2" .pid)"
    name="${name%%.*}"
    [ -n "$1" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$name" ]
}
alive() { [ -f "$1" ] && owned "$(cat "$1" 2>/dev/null)" "$1"; }

if [ ! -d "$STATE/run" ]; then
    log "nothing to stop in $STATE"
    exit 0
fi

# Cancel this cluster's jobs first so slurmd/slurmstepd end the job processes themselves.
if alive "$STATE/run/slurmctld.pid" && [ -f "$STATE/etc/slurm.conf" ]; then
    export SLURM_CONF="$STATE/etc/slurm.conf"
    jobs="$(timeout 10 squeue -h -o '%i' 2>/dev/null || true)"
    if [ -n "$jobs" ]; then
        log "cancelling jobs: $(echo "$jobs" | tr '\n' ' ')"
        # shellcheck disable=SC2086
        timeout 10 scancel $jobs 2>/dev/null || true
        for _ in $(seq 1 40); do
            [ -z "$(timeout 10 squeue -h -o '%i' 2>/dev/null || true)" ] && break
            sleep 0.25
        done
    fi
fi

stop_pidfile() {
    local f="$1" pid
    [ -f "$f" ] || return 0
    pid="$(cat "$f" 2>/dev/null || true)"
    if owned "$pid" "$f"; then
        log "stopping $(basename "$f" .pid) (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            owned "$pid" "$f" || break
            sleep 0.1
        done
        if owned "$pid" "$f"; then
            log "pid $pid still alive after 5s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$f"
}

# Compute daemons first, then the controller, then munge (the others authenticate through it).
for f in "$STATE"/run/slurmd.*.pid; do
    [ -e "$f" ] && stop_pidfile "$f"
done
stop_pidfile "$STATE/run/slurmctld.pid"
stop_pidfile "$STATE/run/munged.pid"

if [ "${LAZYTUNE_SLURM_CLEAN:-0}" = 1 ]; then
    if [ -L /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$STATE/etc/slurm.conf" ]; then
        rm -f /etc/slurm/slurm.conf
    fi
    rm -rf "$STATE"
    log "removed $STATE"
fi
log "stopped"
