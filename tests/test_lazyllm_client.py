"""A real client: LazyLLM's own TrainableModule drives lazytune's finetune classes.

    TrainableModule(base, target).finetune_method(lazytune.finetune.X, **kw).trainset(data).mode('finetune').update()

TrainableModule builds `X(base_model=..., target_path=..., launcher=<a LazyLLM launcher>, **kw)`, calls it with
(trainset, None) and reads the merged folder from the return value. lazytune turns the LazyLLM launcher into its own
(empty -> local, slurm -> slurm; always waiting). Runs in an environment with LazyLLM installed (`pip install
lazyllm==1.4.0`): LAZYLLM_PYTHON names its interpreter, else lazytune's managed `lazyllm` environment (`lazytune
env install lazyllm`, which `make test` installs), else benchmarks/.venv-lazyllm; skipped when there is none (a failure
where LAZYTUNE_REQUIRE_ENVS names lazyllm).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers.alpaca import write_alpaca
from tests.helpers.models import env_python

ROOT = Path(__file__).resolve().parent.parent

DRIVER = r"""
import json, sys
import lazyllm
from lazytune import finetune

base, target, data, method, kw = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
m = (lazyllm.TrainableModule(base, target)
     .finetune_method(getattr(finetune, method), **kw)
     .trainset(data)
     .deploy_method(lazyllm.deploy.dummy)
     .mode("finetune"))
m._impl._get_train_tasks()()   # what update() runs for training (update() also deploys: not lazytune's part)
print("RESULT " + json.dumps({"finetuned": m.finetuned_model_path, "lazyllm": lazyllm.__version__
                              if hasattr(lazyllm, "__version__") else "?"}))
"""


def lazyllm_python() -> str:
    from lazytune import envs

    installed = envs.read_stamp("lazyllm") or os.environ.get("LAZYTUNE_LAZYLLM_PYTHON")
    managed = envs.python_for("lazyllm") if installed else None
    bench = str(ROOT / "benchmarks" / ".venv-lazyllm" / "bin" / "python")
    candidates = [os.environ.get("LAZYLLM_PYTHON"), managed, bench]
    for python in filter(None, candidates):
        if Path(python).is_file():
            proc = subprocess.run([python, "-c", "import lazyllm"], capture_output=True, text=True, timeout=300)
            if proc.returncode == 0:
                return python
    env_python("lazyllm")  # fails where LAZYTUNE_REQUIRE_ENVS names lazyllm, else skips
    pytest.skip("LazyLLM is not installed: `python -m venv V && V/bin/pip install lazyllm==1.4.0`, then "
                "LAZYLLM_PYTHON=V/bin/python (or run `make bench`, which creates benchmarks/.venv-lazyllm)")


def drive(tmp_path: Path, base: Path, data: Path, method: str, **kw: object) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LAZYLLM_HOME": str(tmp_path / "lazyllm-home")}
    argv = [lazyllm_python(), "-c", DRIVER, str(base), str(tmp_path / "target"), str(data), method, json.dumps(kw)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path,
                          stdin=subprocess.DEVNULL)  # fmt: skip
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert proc.returncode == 0 and line, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return json.loads(line[len("RESULT ") :])


def manifest_of(merged: Path) -> dict:
    return json.loads((merged.parent / "lazytune_run.json").read_text())


def test_trainable_module_drives_the_dummy(tmp_path: Path, tiny_folder_model: Path, alpaca_file: Path) -> None:
    result = drive(tmp_path, tiny_folder_model, alpaca_file, "dummy", custom_arg="from LazyLLM")
    merged = Path(result["finetuned"])
    assert merged.name == "lazyllm_merge" and (merged / "merged_from.json").is_file()
    m = manifest_of(merged)
    assert m["state"] == "COMPLETED" and m["plan"]["options"]["custom_arg"] == "from LazyLLM"
    assert m["plan"]["data"] == [str(alpaca_file.resolve())]


@pytest.mark.slow
def test_trainable_module_drives_a_tiny_real_alpacalora(tmp_path: Path) -> None:
    from tests.helpers.models import env_python, tiny_llama

    model = tiny_llama(tmp_path / "models", env_python("alpacalora"))
    data = write_alpaca(tmp_path / "alpaca.json")
    result = drive(tmp_path, model, data, "alpacalora", batch_size=4, micro_batch_size=2, val_set_size=2,
                   num_epochs=1, warmup_steps=0, logging_steps=1, cutoff_len=128)  # fmt: skip
    merged = Path(result["finetuned"])
    assert (merged / "config.json").is_file() and any(merged.glob("*.safetensors"))
    m = manifest_of(merged)
    assert m["state"] == "COMPLETED" and m["backend"] == "alpacalora" and m["metrics"]["steps"] > 0
