# One command sets up and runs the main job; one sets up and runs the tests.
#   make demo      — fresh virtual environment, verify the zoo, train MADE on bundled MNIST, report NLL, pictures
#   make test      — fresh virtual environment, lint + types + the test suite (CI runs this)
#   make test-all  — the same with the thorough hypothesis profile and the slow tests
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
ARSPEC := $(VENV)/bin/arspec
OUT    ?= runs/demo
# torch 2.13.0: the local CPU build on machines without a GPU; PyPI's default (CUDA) build elsewhere.
TORCH  ?= torch==2.13.0

.PHONY: setup demo test test-all lint bench clean

$(VENV)/.installed: pyproject.toml backends/torch/pyproject.toml backends/torch_codegen/pyproject.toml plugins/spatial_lstm/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[dev]" -e backends/torch -e backends/torch_codegen -e plugins/spatial_lstm
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(ARSPEC) check specs/*.yaml
	$(ARSPEC) train specs/made.yaml --data binarized-mnist-5k --out $(OUT) --overwrite --quiet
	$(ARSPEC) eval $(OUT)
	$(ARSPEC) sample $(OUT) -n 36 -o $(OUT)/samples.png
	$(ARSPEC) graph specs/gated_pixelcnn.yaml -o $(OUT)/receptive_field.png
	$(ARSPEC) export $(OUT) -o $(OUT)/made_model.py
	@echo "pictures: $(OUT)/samples.png $(OUT)/samples_probs.png $(OUT)/receptive_field.png $(OUT)/loss.png"

lint: setup
	$(VENV)/bin/ruff check arspec backends plugins tests bench
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest -q -n 2 -p no:cacheprovider

test-all: lint
	HYPOTHESIS_PROFILE=thorough $(PY) -m pytest -q -n 2 -p no:cacheprovider -m "slow or not slow"

bench: setup
	$(PIP) install -q -e ".[bench]"
	$(PY) bench/peers.py
	$(PY) bench/verify.py
	$(PY) bench/sampling.py
	$(PY) bench/train_throughput.py

clean:
	rm -rf $(VENV) runs
