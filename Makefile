# Two commands on a fresh machine: `make demo` and `make test`; each creates .venv if missing.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The CPU wheel of this exact release lies on the build machines' disk; an open range would
# pull a multi-GB CUDA build.
TORCH  := torch==2.13.0

.PHONY: demo test clean venv mutate

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# The main job: the texts' reference VAE on the embedded digits; the run directory is rewritten.
demo: $(STAMP)
	rm -rf runs/demo
	$(VENV)/bin/variational vae train --preset seed --dataset digits --epochs 50 --eval-iw 1000 --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

# Mutation testing of the modules that hold formulas ([tool.mutmut] in pyproject.toml; not in CI).
# Writes mutants/ (ignored by git); `make mutate MUTANTS='variational.core.objectives.*'` runs one
# module's mutants. Scores and the surviving mutants' verdicts: docs/contributing-mutation.md.
mutate: $(STAMP)
	$(PY) -m pip install -q 'mutmut>=3.8'  # source_paths and only_mutate: 3.8's names
	$(VENV)/bin/mutmut run --max-children 2 $(MUTANTS)
	$(VENV)/bin/mutmut results

clean:
	rm -rf runs .pytest_cache
