"""The SLURM batch script and sbatch command line for a pipeline of steps: pure functions of the steps and the
resources, no process started, nothing written (launchers.slurm submits what these render).

Every argv item is quoted with `shlex`; the script runs with `set -euo pipefail`, steps in order, the first non-zero
exit ends the job. Credentials are never written into the script: only their names (see `launchers.secrets`).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .job import Step
from .secrets import is_secret
from .torchrun import split_python_argv, torchrun_argv

# Variables of the submitting environment that jobs get (exact names, then name prefixes). Secret-looking names are
# never taken through a prefix: only when named exactly in `env_allow` or given in `env=` / a step's env.
DEFAULT_ENV_ALLOW: tuple[str, ...] = (
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "TERM",
    "VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "PYTHONPATH", "PYTHONUNBUFFERED", "PYTHONHASHSEED",
    "LD_LIBRARY_PATH", "CUDA_HOME", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TOKENIZERS_PARALLELISM", "SLURM_CONF",
)  # fmt: skip
DEFAULT_ENV_ALLOW_PREFIXES: tuple[str, ...] = ("HF_", "TRANSFORMERS_", "TORCH_", "PYTORCH_", "NCCL_")


# Placeholders for values only the batch shell knows; rendered as "${VAR}" (NUL cannot occur in a real argv).
_NODE_ADDR_SED = r"""'s/.*NodeAddr=\([^ ]*\).*/\1/p'"""
# Masks the values of the named variables in a step's output (names only ever appear in the script, never values).
_REDACT_FUNCTION = r"""lazytune_redact() {  # usage: cmd | lazytune_redact 'NAME1 NAME2'
    awk -v names="$1" 'BEGIN { n = split(names, k, " ") }
    { for (i = 1; i <= n; i++) { v = ENVIRON[k[i]]; if (length(v) < 4) continue; out = ""; s = $0
        while ((p = index(s, v)) > 0) { out = out substr(s, 1, p - 1) "***"; s = substr(s, p + length(v)) }
        $0 = out s }
      print; fflush() }'
}"""
_VAR = re.compile(r"\x00([A-Z_][A-Z0-9_]*)\x00")


def shell_var(name: str) -> str:
    """An argv fragment that the batch script expands at run time, e.g. ``f"--port={shell_var('MASTER_PORT')}"``."""
    return f"\x00{name}\x00"


def quote_arg(arg: str) -> str:
    """shlex-quote one argv item; `shell_var` placeholders inside it become double-quoted expansions."""
    parts = _VAR.split(arg)
    if len(parts) == 1:
        return shlex.quote(arg)
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(f'"${{{part}}}"')
        elif part:
            out.append(shlex.quote(part))
    return "".join(out)


def quote_argv(argv: Iterable[str]) -> str:
    """`shlex.join` that also understands `shell_var` placeholders."""
    return " ".join(quote_arg(a) for a in argv)


def _comment(text: str) -> str:
    """Text safe inside a `#` comment (a newline would end the comment and start a command)."""
    return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


def _check_env_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"invalid environment variable name {name!r}")


@dataclass(frozen=True)
class Resources:
    """What one job asks SLURM for."""

    nnodes: int = 1
    ntasks_per_node: int = 1
    ngpus: int = 0
    partition: str | None = None
    time: str | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    gpu_type: str | None = None  # gres type ('a100'): asked for as --gres=gpu:a100:N

    @property
    def gres(self) -> str:
        return f"gpu:{self.gpu_type}:{self.ngpus}" if self.gpu_type else f"gpu:{self.ngpus}"


def _job_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:100] or "lazytune"


def _output_pattern(path: Path) -> str:
    """sbatch expands %-patterns in --output; a path with '%' in it is written with '%%' (no backslash present)."""
    text = str(path)
    return text if "\\" in text else text.replace("%", "%%")


def sbatch_argv(
    script: Path,
    name: str,
    output: Path,
    res: Resources,
    export: Sequence[str],
    extra: Sequence[str] = (),
) -> list[str]:
    """The `sbatch --parsable ...` argv submitting `script` (options on the command line, not in #SBATCH lines)."""
    argv = [
        "sbatch", "--parsable", f"--job-name={_job_name(name)}", f"--output={_output_pattern(output)}",
        f"--nodes={res.nnodes}", f"--ntasks-per-node={res.ntasks_per_node}",
    ]  # fmt: skip
    if res.ngpus:
        argv.append(f"--gres={res.gres}")
    if res.partition:
        argv.append(f"--partition={res.partition}")
    if res.time:
        argv.append(f"--time={res.time}")
    if res.cpus_per_task:
        argv.append(f"--cpus-per-task={res.cpus_per_task}")
    if res.mem:
        argv.append(f"--mem={res.mem}")
    for n in export:
        _check_env_name(n)
    argv.append("--export=" + ",".join(export) if export else "--export=NONE")
    argv += [str(a) for a in extra]
    argv.append(str(script))
    return argv


def step_argv(step: Step, res: Resources) -> list[str]:
    """The argv that runs `step` inside the allocation (torchrun / srun for distributed steps)."""
    nproc = res.ntasks_per_node
    if not step.runs_torchrun(nproc, res.nnodes):
        return list(step.argv)
    if res.nnodes == 1:
        return torchrun_argv(step.argv, nproc, master_addr="127.0.0.1", master_port=shell_var("MASTER_PORT"))
    python, rest = split_python_argv(step.argv)
    srun = [
        "srun", f"--nodes={res.nnodes}", f"--ntasks={res.nnodes}", "--ntasks-per-node=1",
        f"--cpus-per-task={nproc * (res.cpus_per_task or 1)}", "--kill-on-bad-exit=1", "--export=ALL",
    ]  # fmt: skip
    if res.ngpus:
        srun.append(f"--gres={res.gres}")
    # One torchrun per node; they meet at a c10d rendezvous on the first node (same command on every node).
    torchrun = [
        python, "-m", "torch.distributed.run", f"--nnodes={res.nnodes}", f"--nproc_per_node={nproc}",
        "--rdzv_backend=c10d", f"--rdzv_endpoint={shell_var('MASTER_ADDR')}:{shell_var('MASTER_PORT')}",
        f"--rdzv_id={shell_var('SLURM_JOB_ID')}",
    ]  # fmt: skip
    return [*srun, *torchrun, *rest]


def render_batch_script(
    steps: Sequence[Step],
    name: str,
    status_file: Path,
    res: Resources,
    env: Mapping[str, str] | None = None,
    sbatch_options: Sequence[str] = (),
    secret_names: Iterable[str] = (),
) -> str:
    """The batch script for `steps` (pure function: same input, same text).

    `env` holds non-secret variables exported for every step; secret-named variables must not be passed here (they
    reach the job through sbatch's environment). `secret_names` (plus the secret names in the steps' env) are
    variables whose values are masked as *** in the step logs, by name. `sbatch_options` only goes into a comment.
    """
    env = dict(env or {})
    secret_names = sorted({*secret_names, *(k for s in steps for k in s.env if is_secret(k))})
    for k in [*env, *secret_names, *(k for s in steps for k in s.env)]:
        _check_env_name(k)
    leaked = [k for k in env if is_secret(k)]
    if leaked:
        raise ValueError(f"secret variables must not be written into a batch script: {', '.join(sorted(leaked))}")
    q = shlex.quote
    lines = [
        "#!/bin/bash",
        f"# lazytune batch script for job {_comment(name)!s} -- generated by launchers.slurm; every argument is",
        "# quoted with shlex. Steps run in order; the first failing step ends the job with its exit code.",
    ]
    if sbatch_options:
        lines.append("# sbatch " + _comment(" ".join(shlex.quote(o) for o in sbatch_options)))
    lines += [
        "set -euo pipefail",
        "",
        f"LAUNCHERS_STATUS={q(str(status_file))}",
        'lazytune_mark() { printf \'%s\\t%s\\t%s\\t%s\\n\' "$1" "$2" "$3" "$(date +%s.%N)" >>"$LAUNCHERS_STATUS"; }',
        "export SLURM_EXPORT_ENV=ALL  # srun steps inside this job see the variables set below",
        *(_REDACT_FUNCTION.splitlines() if secret_names else []),
        'export MASTER_PORT="${MASTER_PORT:-$((20000 + ${SLURM_JOB_ID:-0} % 20000))}"',
    ]
    if res.nnodes > 1:
        lines += [
            "# rendezvous on the first node of the allocation",
            'LAUNCHERS_FIRST_NODE="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)"',
            'MASTER_ADDR="$(scontrol show node -o "$LAUNCHERS_FIRST_NODE" | sed -n ' + _NODE_ADDR_SED + ')"',
            'export MASTER_ADDR="${MASTER_ADDR:-$LAUNCHERS_FIRST_NODE}"',
        ]
    else:
        lines.append("export MASTER_ADDR=127.0.0.1")
    for k in sorted(env):
        lines.append(f"export {k}={q(env[k])}")
    total = len(steps)
    for i, step in enumerate(steps):
        secret = sorted(k for k in step.env if is_secret(k))
        argv = step_argv(step, res)
        lines += [
            "",
            f"# ---- step {i + 1}/{total}: {_comment(step.name)}"
            + (f" (secret variables from the job environment: {', '.join(secret)})" if secret else ""),
            f"lazytune_mark start {i} -",
            f"mkdir -p -- {q(str(step.log.parent))}",
            "rc=0",
            "(",
        ]
        if step.cwd is not None:
            lines.append(f"    cd -- {q(str(step.cwd))} || exit 126")
        for k in sorted(step.env):
            if not is_secret(k):
                lines.append(f"    export {k}={q(step.env[k])}")
        lines += [
            # built after the step's exports, so a step's MASTER_PORT pins the rendezvous port (as locally)
            f"    cmd=({quote_argv(argv)})",
            "    printf '$'; printf ' %q' \"${cmd[@]}\"; printf '\\n'",
            '    exec "${cmd[@]}"',
            f") 2>&1 </dev/null | lazytune_redact {q(' '.join(secret_names))} >>{q(str(step.log))} || rc=$?"
            if secret_names
            else f") >>{q(str(step.log))} 2>&1 </dev/null || rc=$?",
            f'lazytune_mark end {i} "$rc"',
            'if [ "$rc" -ne 0 ]; then',
            f"    printf 'lazytune: step %s failed with exit code %s\\n' {q(step.name)} \"$rc\" >&2",
            '    exit "$rc"',
            "fi",
        ]
    lines += ["", "printf 'lazytune: all %s steps completed\\n' " + str(total), ""]
    return "\n".join(lines)
