#!/usr/bin/env bash
# Start a small, real SLURM cluster on this host for lazytune's tests (no systemd, no cgroups needed).
#
#   tests/slurm/start.sh            # install (if needed), configure, start, wait until idle
#   source "$LAZYTUNE_SLURM_DIR/env" # then sinfo/sbatch/squeue talk to it (SLURM_CONF)
#   tests/slurm/stop.sh             # ends exactly the daemons this script started
#
# Idempotent: a cluster in $LAZYTUNE_SLURM_DIR that answers with the same configuration is left as it is; one
# started with other settings (or by an older version of this script) is restarted.
# Knobs (environment):
#   LAZYTUNE_SLURM_DIR     all state, config, logs, spool and pid files    [/tmp/lazytune-slurm]
#   LAZYTUNE_SLURM_NODES   simulated compute nodes (one slurmd each)       [2]
#   LAZYTUNE_SLURM_CPUS    CPUs declared per node (may exceed the real)    [4]
#   LAZYTUNE_SLURM_GPUS    fake GPUs per node (symlinks to /dev/null)      [2]
#   LAZYTUNE_SLURM_SPARE   1: one more node, ltspare, alone in partition `spare`, for tests that take a node
#                          down (NODE_FAIL) without touching jobs in `debug`                         [1]
#   LAZYTUNE_SLURM_PORT    slurmctld port; slurmd ports follow it          [6817]
#   LAZYTUNE_SLURM_TIMEOUT seconds to wait for the nodes to become idle    [60]
#   LAZYTUNE_SLURM_EXTRA_CONF  lines appended to slurm.conf (later lines win)  []
#   LAZYTUNE_SLURM_NO_INSTALL=1  never call apt-get (fail if binaries are missing)
#   LAZYTUNE_SLURM_LINK_ETC=0    do not point /etc/slurm/slurm.conf at the generated config
# Debian's slurm-wlm 22.05 + munge are installed with apt-get when missing (needs root).
set -euo pipefail

STATE="${LAZYTUNE_SLURM_DIR:-/tmp/lazytune-slurm}"
NODES="${LAZYTUNE_SLURM_NODES:-2}"
CPUS="${LAZYTUNE_SLURM_CPUS:-4}"
GPUS="${LAZYTUNE_SLURM_GPUS:-2}"
PORT="${LAZYTUNE_SLURM_PORT:-6817}"
TIMEOUT="${LAZYTUNE_SLURM_TIMEOUT:-60}"
SPARE="${LAZYTUNE_SLURM_SPARE:-1}"
ALL=$((NODES + SPARE))
# Memory is declared, not reserved: it only has to be larger than what tests ask for. Jobs are held to what they
# get (--mem, else DefMemPerCPU per CPU): jobacct_gather/linux samples RSS every second and OverMemoryKill ends a job
# above it (no cgroups needed).
MEM_PER_NODE=16000
CLUSTER=lazytune

log() { printf '[slurm-start] %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    diagnostics
    exit 1
}
diagnostics() {
    [ -d "$STATE/log" ] || return 0
    local f
    for f in "$STATE"/log/*.log; do
        [ -f "$f" ] || continue
        log "---- last lines of $f ----"
        tail -n 25 "$f" >&2 || true
    done
    if command -v sinfo >/dev/null 2>&1 && [ -f "$STATE/etc/slurm.conf" ]; then
        log "---- sinfo ----"
        SLURM_CONF="$STATE/etc/slurm.conf" timeout 10 sinfo -N -l >&2 2>&1 || true
    fi
}
# A pid file is alive only if its pid runs the daemon it names (a stale file's pid may have been reused).
alive() {
    local pid name
    [ -f "$1" ] || return 1
    pid="$(cat "$1" 2>/dev/null)"
    name="$(basename "$1" .pid)"
    name="${name%%.*}"
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]
}
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
node_name() { if [ "$1" -gt "$NODES" ]; then echo ltspare; else printf 'ltnode%d' "$1"; fi; }

# ---------------------------------------------------------------- install
install_packages() {
    local missing=()
    for b in slurmctld slurmd sinfo munged mungekey; do
        command -v "$b" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$b" >/dev/null 2>&1 || missing+=("$b")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "${LAZYTUNE_SLURM_NO_INSTALL:-0}" = 1 ] && die "missing ${missing[*]} and LAZYTUNE_SLURM_NO_INSTALL=1"
    [ "$(id -u)" = 0 ] || die "missing ${missing[*]}; installing slurm-wlm needs root (apt-get)"
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get on this system"
    log "installing slurmctld slurmd slurm-client munge with apt-get (missing: ${missing[*]})"
    # Package scripts must not try to start services (no systemd/init here): policy-rc.d exiting 101.
    local made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    local rc=0
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                slurmctld slurmd slurm-client munge
    } >"${TMPDIR:-/tmp}/lazytune-slurm-apt.log" 2>&1 || rc=$?
    [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
    if [ "$rc" != 0 ]; then
        tail -n 30 "${TMPDIR:-/tmp}/lazytune-slurm-apt.log" >&2
        die "apt-get failed (rc=$rc)"
    fi
}

# ---------------------------------------------------------------- config
write_config() {
    mkdir -p "$STATE"/{etc,log,run,ctld,munge,dev} "$STATE/spool"
    chmod 700 "$STATE/munge"
    if [ ! -s "$STATE/munge/munge.key" ]; then
        if command -v mungekey >/dev/null 2>&1 || [ -x /usr/sbin/mungekey ]; then
            PATH="$PATH:/usr/sbin" mungekey --create --keyfile="$STATE/munge/munge.key" --force
        else
            dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1 count=1024 status=none
        fi
        chmod 600 "$STATE/munge/munge.key"
    fi

    local i n g
    for i in $(seq 1 "$ALL"); do
        n="$(node_name "$i")"
        mkdir -p "$STATE/dev/$n"
        for g in $(seq 0 $((GPUS - 1))); do
            ln -sfn /dev/null "$STATE/dev/$n/nvidia$g"
        done
    done
    render_config "$STATE/etc"
    local conf="$STATE/etc/slurm.conf"
    cat >"$STATE/env" <<EOF
# source this file to talk to the lazytune test cluster
export SLURM_CONF=$(printf '%q' "$conf")
EOF
    if [ "${LAZYTUNE_SLURM_LINK_ETC:-1}" = 1 ] && [ -w /etc ]; then
        mkdir -p /etc/slurm
        # Only take /etc/slurm/slurm.conf if it is absent or already ours (never overwrite a real site config).
        if [ ! -e /etc/slurm/slurm.conf ] || [ "$(readlink /etc/slurm/slurm.conf || true)" = "$conf" ]; then
            ln -sfn "$conf" /etc/slurm/slurm.conf
        fi
    fi
}

# slurm.conf and gres.conf for the knobs above, into folder $1 (writes only those two files).
render_config() {
    local user i n
    user="$(id -un)"
    mkdir -p "$1"
    local conf="$1/slurm.conf" gres="$1/gres.conf"
    {
        echo "# generated by lazytune tests/slurm/start.sh -- one host, $NODES simulated nodes"
        echo "ClusterName=$CLUSTER"
        echo "SlurmctldHost=localhost(127.0.0.1)"
        echo "SlurmctldPort=$PORT"
        echo "SlurmdPort=$((PORT + 1))"
        echo "SlurmUser=$user"
        echo "SlurmdUser=$user"
        echo "AuthType=auth/munge"
        echo "CredType=cred/munge"
        echo "AuthInfo=socket=$STATE/munge/munge.socket"
        echo "StateSaveLocation=$STATE/ctld"
        echo "SlurmdSpoolDir=$STATE/spool/slurmd.%n"
        echo "SlurmctldPidFile=$STATE/run/slurmctld.pid"
        echo "SlurmdPidFile=$STATE/run/slurmd.%n.pid"
        echo "SlurmctldLogFile=$STATE/log/slurmctld.log"
        echo "SlurmdLogFile=$STATE/log/slurmd.%n.log"
        echo "SlurmctldDebug=info"
        echo "SlurmdDebug=info"
        echo "ProctrackType=proctrack/linuxproc"
        echo "TaskPlugin=task/none"
        echo "JobAcctGatherType=jobacct_gather/linux"
        echo "JobAcctGatherFrequency=1"
        echo "JobAcctGatherParams=OverMemoryKill"
        echo "SelectType=select/cons_tres"
        echo "SelectTypeParameters=CR_Core_Memory"
        echo "SlurmdParameters=config_overrides"
        echo "AccountingStorageType=accounting_storage/none"
        echo "JobCompType=jobcomp/filetxt"
        echo "JobCompLoc=$STATE/log/jobcomp.txt"
        echo "MinJobAge=300"
        echo "ReturnToService=2"
        echo "MpiDefault=none"
        echo "KillWait=5"
        echo "InactiveLimit=0"
        echo "SlurmdTimeout=60"
        echo "SchedulerType=sched/backfill"
        echo "SchedulerParameters=batch_sched_delay=0,sched_min_interval=0"  # jobs start in ~1 s, not ~3 s
        echo "DefMemPerCPU=2000"
        echo "GresTypes=gpu"
        for i in $(seq 1 "$ALL"); do
            n="$(node_name "$i")"
            # Each simulated node has its own slurmd port on the same host.
            echo "NodeName=$n NodeHostname=localhost NodeAddr=127.0.0.1 Port=$((PORT + 10 + i)) CPUs=$CPUS" \
                "RealMemory=$MEM_PER_NODE Gres=gpu:$GPUS State=UNKNOWN"
        done
        # MaxTime bounds requests: a job asking for more stays PENDING (PartitionTimeLimit), used by the tests.
        echo "PartitionName=debug Nodes=ltnode[1-$NODES] Default=YES MaxTime=01:00:00 State=UP OverSubscribe=NO"
        [ "$SPARE" = 1 ] && echo "PartitionName=spare Nodes=ltspare Default=NO MaxTime=00:10:00 State=UP"
        [ -n "${LAZYTUNE_SLURM_EXTRA_CONF:-}" ] && printf '%s\n' "$LAZYTUNE_SLURM_EXTRA_CONF"
    } >"$conf"
    {
        echo "# fake GPUs: gres/gpu needs device files; symlinks to /dev/null named nvidiaN are accepted"
        echo "AutoDetect=off"
        for i in $(seq 1 "$ALL"); do
            n="$(node_name "$i")"
            echo "NodeName=$n Name=gpu File=$STATE/dev/$n/nvidia[0-$((GPUS - 1))]"
        done
    } >"$gres"
}

# Whether the running cluster was started with the configuration these knobs give now.
config_current() {
    local check="$STATE/etc/.check" same=0
    render_config "$check"
    cmp -s "$check/slurm.conf" "$STATE/etc/slurm.conf" && cmp -s "$check/gres.conf" "$STATE/etc/gres.conf" || same=1
    rm -rf "$check"
    return $same
}

# ---------------------------------------------------------------- daemons
start_munge() {
    alive "$STATE/run/munged.pid" && return 0
    log "starting munged"
    PATH="$PATH:/usr/sbin" munged --force \
        --socket="$STATE/munge/munge.socket" \
        --key-file="$STATE/munge/munge.key" \
        --pid-file="$STATE/run/munged.pid" \
        --log-file="$STATE/log/munged.log" \
        --seed-file="$STATE/munge/munged.seed" ||
        die "munged failed to start"
    local t=0
    until [ -S "$STATE/munge/munge.socket" ]; do
        t=$((t + 1))
        [ $t -gt 50 ] && die "munged socket did not appear"
        sleep 0.1
    done
    munge -S "$STATE/munge/munge.socket" -n </dev/null | unmunge -S "$STATE/munge/munge.socket" >/dev/null ||
        die "munge round trip failed"
}

start_slurmctld() {
    alive "$STATE/run/slurmctld.pid" && return 0
    log "starting slurmctld"
    # -c: start from a clean state (no jobs from an earlier run of this script)
    PATH="$PATH:/usr/sbin" slurmctld -c -f "$STATE/etc/slurm.conf" ||
        die "slurmctld failed to start"
}

start_slurmd() {
    local i n
    for i in $(seq 1 "$ALL"); do
        n="$(node_name "$i")"
        alive "$STATE/run/slurmd.$n.pid" && continue
        mkdir -p "$STATE/spool/slurmd.$n"
        log "starting slurmd for $n"
        PATH="$PATH:/usr/sbin" slurmd -N "$n" -f "$STATE/etc/slurm.conf" ||
            die "slurmd $n failed to start"
    done
}

wait_idle() {
    local deadline=$((SECONDS + TIMEOUT)) states
    export SLURM_CONF="$STATE/etc/slurm.conf"
    while :; do
        states="$(timeout 10 sinfo -h -N -o '%N %t' 2>/dev/null | sort -u || true)"
        # Every node idle (or already busy with jobs: mix/alloc) is ready.
        if [ -n "$states" ] && [ "$(printf '%s\n' "$states" | grep -cvE ' (idle|mix|alloc)$' || true)" = 0 ] &&
            [ "$(printf '%s\n' "$states" | wc -l)" -ge "$ALL" ]; then
            log "cluster ready in $((SECONDS - START))s:"
            printf '%s\n' "$states" | sed 's/^/[slurm-start]   /' >&2
            return 0
        fi
        # A node that came up DOWN/DRAIN (e.g. stale state): resume it once.
        if printf '%s\n' "$states" | grep -qE ' (down|drain|drng|unk)\*?$'; then
            for n in $(printf '%s\n' "$states" | grep -E ' (down|drain|drng)$' | cut -d' ' -f1); do
                timeout 10 scontrol update NodeName="$n" State=RESUME >/dev/null 2>&1 || true
            done
        fi
        [ $SECONDS -ge $deadline ] && die "nodes not idle after ${TIMEOUT}s: $(echo "$states" | tr '\n' ' ')"
        sleep 0.5
    done
}

already_up() {
    alive "$STATE/run/munged.pid" && alive "$STATE/run/slurmctld.pid" || return 1
    local i
    for i in $(seq 1 "$ALL"); do alive "$STATE/run/slurmd.$(node_name "$i").pid" || return 1; done
    SLURM_CONF="$STATE/etc/slurm.conf" timeout 10 sinfo -h >/dev/null 2>&1
}

START=$SECONDS
install_packages
if already_up && config_current; then
    log "cluster in $STATE is already running"
    wait_idle
else
    if already_up; then
        log "cluster in $STATE runs an older configuration: restarting it"
    fi
    # Half-started leftovers (e.g. a crashed slurmd) are stopped first so the start is clean.
    if ls "$STATE"/run/*.pid >/dev/null 2>&1; then
        log "stopping leftovers of an earlier start"
        LAZYTUNE_SLURM_DIR="$STATE" bash "$(dirname "${BASH_SOURCE[0]}")/stop.sh" || true
    fi
    for p in "$PORT" $(seq $((PORT + 11)) $((PORT + 10 + ALL))); do
        port_free "$p" || die "port $p on 127.0.0.1 is taken (another SLURM?); choose others with LAZYTUNE_SLURM_PORT"
    done
    write_config
    start_munge
    start_slurmctld
    start_slurmd
    wait_idle
fi
echo "SLURM_CONF=$STATE/etc/slurm.conf"
