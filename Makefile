# Two commands on a fresh machine: `make demo` and `make test`; each creates .venv if missing,
# installing the exact versions locked in requirements/dev.lock.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
LOCK   := requirements/dev.lock
# The torch CPU wheel lies on the build machines' disk; pip finds it there. Elsewhere add
# PyTorch's CPU index (PIP_EXTRA_INDEX_URL) before running make.
FIND   := $(if $(wildcard /opt/wheels),--find-links /opt/wheels)
PIP    := $(PY) -m pip install -q --disable-pip-version-check $(FIND)
UV_COMPILE := $(VENV)/bin/uv pip compile pyproject.toml requirements/build.in --generate-hashes \
	--python-version 3.11 --python-platform x86_64-manylinux_2_28 $(FIND) \
	--constraints requirements/torch-cpu.txt --quiet

.PHONY: demo test lint format docs lock test-latest bench-env mutate clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) --require-hashes --no-deps -r $(LOCK)
	$(PIP) --no-deps --no-build-isolation -e .
	touch $@

# The main job: the texts' reference VAE on the embedded digits; the run directory is rewritten.
demo: $(STAMP)
	rm -rf runs/demo
	$(VENV)/bin/variational vae train --preset reference --dataset digits --epochs 50 --eval-iw 1000 --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench examples docs
	$(VENV)/bin/ruff format --check src tests bench examples docs

format: $(STAMP)
	$(VENV)/bin/ruff check --fix src tests bench examples docs
	$(VENV)/bin/ruff format src tests bench examples docs

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# Refresh the locks from the ranges in pyproject.toml (needs the package index).
lock: $(STAMP)
	$(PY) -m pip install -q uv
	$(UV_COMPILE) --extra test --extra docs --extra lint --extra mutate -o requirements/dev.lock
	$(UV_COMPILE) --extra bench --constraints requirements/dev.lock -o requirements/bench.lock

# Drift found on purpose: a throwaway venv with today's releases inside pyproject's ranges.
test-latest:
	rm -rf .venv-latest
	python3 -m venv .venv-latest
	.venv-latest/bin/python -m pip install -q $(FIND) torch==2.13.0
	.venv-latest/bin/python -m pip install -q $(FIND) -e '.[test]'
	.venv-latest/bin/python -m pytest -q -p no:cacheprovider
	rm -rf .venv-latest

# The comparison benchmarks' packages (NumPyro, JAX, Pyro, diffusers), locked, into .venv.
bench-env: $(STAMP)
	$(PIP) --require-hashes --no-deps -r requirements/bench.lock

# Mutation testing of the modules that hold formulas ([tool.mutmut] in pyproject.toml; not in CI).
# Writes mutants/ (ignored by git); `make mutate MUTANTS='variational.core.objectives.*'` runs one
# module's mutants. Scores and the surviving mutants' verdicts: docs/contributing-mutation.md.
mutate: $(STAMP)
	$(VENV)/bin/mutmut run --max-children 2 $(MUTANTS)
	$(VENV)/bin/mutmut results

clean:
	rm -rf runs site .pytest_cache
