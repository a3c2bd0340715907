# Two commands set up everything on a fresh machine:
#   make demo   - the main job: a real tiny LoRA fine-tune + merge with LLaMA-Factory on CPU
#   make test   - lint + the whole test suite (installs backend envs, starts a real SLURM test cluster)
# Everything is installed by these targets: a project venv (.venv) and one venv per backend under
# $LAZYTUNE_HOME/envs (default ~/.lazytune/envs), reused on later runs while their pinned specs are unchanged.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LAZYTUNE := $(VENV)/bin/lazytune
# Backend environments the tests need (collie: its import is tested, training needs a GPU; lazyllm: the LazyLLM client
# that drives lazytune in tests/test_lazyllm_client.py).
TEST_ENVS ?= llamafactory llamafactory-ppo alpacalora flagembedding collie lazyllm
PYTEST_ARGS ?=

.PHONY: setup envs demo test lint bench slurm-start slurm-stop clean gpu-check gpu-wheels

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

envs: setup
	$(LAZYTUNE) env install $(TEST_ENVS)

demo: setup
	$(LAZYTUNE) env install llamafactory
	$(PY) -m lazytune.demo --out demo-run

lint: setup
	$(VENV)/bin/ruff check .

test: setup lint envs
	bash tests/slurm/start.sh || echo "WARNING: the SLURM test cluster did not start; slurm tests will skip with the reason"
	status=0; LAZYTUNE_REQUIRE_ENVS="$(TEST_ENVS)" $(PY) -m pytest -ra --durations=25 $(PYTEST_ARGS) || status=$$?; \
	bash tests/slurm/stop.sh || true; exit $$status

bench: setup
	$(LAZYTUNE) env install llamafactory
	$(PY) -m benchmarks.run

# On a machine with an NVIDIA GPU (offline is fine): every gpu-marked test + the GPU benchmark, one JSON + a table
# (benchmarks/gpu_check.py). GPU_PYTHON is the Python that has torch with CUDA; DRY_RUN=1 prints the commands only.
GPU_PYTHON ?= python3
gpu-check:
	$(GPU_PYTHON) -m benchmarks.gpu_check --python "$$(command -v $(GPU_PYTHON))" $(if $(DRY_RUN),--dry-run) $(GPU_CHECK_ARGS)

# On a machine with a package index: the wheels the GPU machine lacks, into .whl/ (HAVE=<its pip freeze>).
gpu-wheels:
	$(PYTHON) -m benchmarks.gpu_wheels $(if $(HAVE),--have $(HAVE))

slurm-start:
	bash tests/slurm/start.sh

slurm-stop:
	bash tests/slurm/stop.sh

clean:
	rm -rf $(VENV) build dist *.egg-info demo-run .pytest_cache .ruff_cache
