# Two commands on a fresh machine: `make demo` and `make test`; each creates .venv if missing.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The CPU wheel of this exact release lies on the build machines' disk; an open range would
# pull a multi-GB CUDA build.
TORCH  := torch==2.13.0

.PHONY: demo test clean venv

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

clean:
	rm -rf runs .pytest_cache
