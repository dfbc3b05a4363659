# Two commands set up a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# TensorFlow's C++ start-up chatter hides the output that matters.
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test lint bench clean fashion_mnist

FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Reinstall when the package metadata changes.
$(STAMP): $(PY) setup.py
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

# Real data with headroom: Debian's package of the original Fashion-MNIST files.
# Installed when missing and this machine allows it (root with apt); otherwise
# the suite skips the tests that read the real files and says so.
fashion_mnist:
	@if [ -f $(FASHION_MNIST) ]; then \
		echo "Fashion-MNIST: found in $(dir $(FASHION_MNIST))"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Fashion-MNIST: installing Debian's dataset-fashion-mnist (30 MB)"; \
		(apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
		 (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1)) \
		&& echo "Fashion-MNIST: installed in $(dir $(FASHION_MNIST))" \
		|| echo "Fashion-MNIST: could not install dataset-fashion-mnist; tests that need it are skipped"; \
	else \
		echo "Fashion-MNIST: not installed (needs root and apt: apt-get install dataset-fashion-mnist)"; \
	fi

# The main job on real data when it is here: ResNet-20 on 6,000 Fashion-MNIST images,
# asked for 10% fewer MACs (a compact budget, so the plan must change something);
# the embedded digits otherwise (at the equal-cost budget).
DEMO_COMMON := --model=resnet20 --num_candidates=8 --fine_tune_epochs=1 --output_dir=out/demo
DEMO_FASHION := --dataset=fashion_mnist --train_examples=6000 --pretrain_epochs=2 --search_epochs=4 --weight_steps=15 --policy_steps=3 --macs_ratio=0.9
DEMO_DIGITS := --dataset=digits --pretrain_epochs=10 --search_epochs=10 --weight_steps=50 --policy_steps=10

demo: $(STAMP) fashion_mnist
	@if [ -f $(FASHION_MNIST) ]; then \
		echo "make demo: Fashion-MNIST is here, so the demo runs on it: $(DEMO_FASHION)"; \
		$(PY) examples/transform.py $(DEMO_COMMON) $(DEMO_FASHION); \
	else \
		echo "make demo: no Fashion-MNIST here, so the demo runs on the embedded digits: $(DEMO_DIGITS)"; \
		$(PY) examples/transform.py $(DEMO_COMMON) $(DEMO_DIGITS); \
	fi

# Two workers: most of the suite is single-threaded Python (building models). Each
# file runs on one worker (loadfile), so an expensive module-scoped fixture (the
# distributed tests' subprocesses) runs once, not once per worker that gets one
# of its tests. (loadgroup does not group under pytest 9: xdist 3.8 rewrites
# `item._nodeid`, which pytest 9 no longer reads.) The slowest tests are listed
# at the end, so a run shows where the suite's time goes.
test: $(STAMP) fashion_mnist
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=25 tests

lint: $(STAMP)
	$(VENV)/bin/ruff check nat_keras tests examples benchmarks

bench: $(STAMP)
	$(PY) benchmarks/encode_rebuild.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
