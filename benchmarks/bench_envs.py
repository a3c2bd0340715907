"""Backend environment installs, before and after locks: `python -m benchmarks.bench_envs [--envs a,b] [--repeat N]`.

For each environment, from a warm cache (each variant is run once first to fill its cache; then timed):
  resolve+pip  the old procedure: `pip install` of the spec's top-level requirements, resolving at install time
               (llamafactory without its dependencies first, as before)
  lock+pip     `lazytune env install` from the committed lock with LAZYTUNE_INSTALLER=pip (no resolution)
  lock+uv      `lazytune env install` from the committed lock with uv (the default when uv is installed)
The two `lazytune env install` rows include the imports check and the smoke run (what makes an environment count as
installed); the time spent creating the venv and installing the packages alone is printed beside them. Everything
goes to a temporary LAZYTUNE_HOME; results: benchmarks/results/envs-<time>.json and a table on stdout.
Goal: <= 20 s per environment with lock+uv.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lazytune import envs

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{(proc.stdout + proc.stderr)[-3000:]}")
    return time.monotonic() - started


def resolve_with_pip(name: str, work: Path, env: dict[str, str]) -> float:
    """The pre-lock install: a venv, then pip resolving the spec's top-level requirements."""
    spec = envs.get_spec(name)
    venv = work / f"old-{name}"
    shutil.rmtree(venv, ignore_errors=True)
    started = time.monotonic()
    _timed([sys.executable, "-m", "venv", str(venv)], env)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    top = [envs.torch_requirement(False) if r == envs.TORCH else r for r in spec.requirements]
    _timed([*pip, top[0]], env)
    if spec.unresolved:
        _timed([*pip, "--no-deps", *spec.unresolved], env)
    _timed([*pip, *top[1:]], env)
    seconds = time.monotonic() - started
    shutil.rmtree(venv, ignore_errors=True)
    return seconds


def install_from_lock(name: str, tool: str, home: Path, env: dict[str, str]) -> tuple[float, float]:
    """`lazytune env install --force` from the lock; returns (total seconds, seconds creating the venv and
    installing the packages)."""
    run_env = dict(env, LAZYTUNE_HOME=str(home), LAZYTUNE_INSTALLER=tool)
    code = (
        "import sys, time; from lazytune import envs\n"
        "spent = {'install': 0.0}\n"
        "def timed(f):\n"
        "    def inner(*a, **k):\n"
        "        t = time.monotonic(); r = f(*a, **k); spent['install'] += time.monotonic() - t; return r\n"
        "    return inner\n"
        "envs._create_venv, envs._install_exact = timed(envs._create_venv), timed(envs._install_exact)\n"
        "t = time.monotonic(); envs.install(sys.argv[1], force=True, cuda=False, log=lambda _: None)\n"
        "print(time.monotonic() - t, spent['install'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, name], env=run_env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"install of {name} with {tool} failed:\n{proc.stderr[-3000:]}")
    total, checks = (float(x) for x in proc.stdout.split()[-2:])
    return total, checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_envs", description=__doc__.split("\n")[0])
    parser.add_argument("--envs", default=",".join(envs.BACKENDS), help="comma-separated environment names")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per row (median reported)")
    parser.add_argument("--no-old", action="store_true", help="skip the resolve+pip row")
    args = parser.parse_args(argv)
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", OMP_NUM_THREADS="1")
    rows = []
    with tempfile.TemporaryDirectory(prefix="lazytune-bench-envs-") as tmp:
        work = Path(tmp)
        for name in args.envs.split(","):
            row: dict[str, object] = {"env": name, "load_before": os.getloadavg()[0]}
            if not args.no_old:
                resolve_with_pip(name, work, env)  # warm pip's cache
                row["resolve+pip"] = statistics.median(resolve_with_pip(name, work, env) for _ in range(args.repeat))
            for tool in ("pip", "uv"):
                home = work / f"home-{tool}"
                install_from_lock(name, tool, home, env)  # warm this installer's cache
                runs = [install_from_lock(name, tool, home, env) for _ in range(args.repeat)]
                row[f"lock+{tool}"] = statistics.median(r[0] for r in runs)
                row[f"lock+{tool} install only"] = statistics.median(r[1] for r in runs)
                shutil.rmtree(home, ignore_errors=True)
            row["load_after"] = os.getloadavg()[0]
            rows.append(row)
            print(json.dumps(row), flush=True)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"envs-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"python": sys.version.split()[0], "nproc": os.cpu_count(), "rows": rows}, indent=2))
    print(f"\n{'env':<18} {'resolve+pip':>12} {'lock+pip':>10} {'lock+uv':>9} {'uv install only':>16}")
    for r in rows:
        old = f"{r['resolve+pip']:.0f} s" if "resolve+pip" in r else "-"
        print(f"{r['env']:<18} {old:>12} {r['lock+pip']:>8.0f} s {r['lock+uv']:>7.0f} s "
              f"{r['lock+uv install only']:>14.0f} s")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
