# Two commands set up a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# TensorFlow's C++ start-up chatter hides the output that matters.
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Reinstall when the package metadata changes.
$(STAMP): $(PY) setup.py
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/transform.py --model=resnet20 --dataset=digits --pretrain_epochs=10 --search_epochs=10 --weight_steps=50 --policy_steps=10 --num_candidates=10 --fine_tune_epochs=1 --export_dir=out/demo

# Two workers: most of the suite is single-threaded Python (building models).
test: $(STAMP)
	$(PY) -m pytest -q -n 2 tests

lint: $(STAMP)
	$(VENV)/bin/ruff check nat_keras tests examples benchmarks

bench: $(STAMP)
	$(PY) benchmarks/encode_rebuild.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
