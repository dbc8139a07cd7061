# Two commands from a fresh clone: `make demo` and `make test`. Each sets itself up.
VENV := .venv
PYTHON := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
DEMO_DIR := demo

.PHONY: setup demo-deps test-deps demo demo-data demo-clean demo-train demo-serve demo-predict cifake-data train-cifake test test-fast lint format mutate

setup: $(VENV)/.installed

# The project itself, editable, with its test and lint tools (the dev extra of pyproject.toml):
# the benchmarks in bench/ import the installed package.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[dev]'
	touch $@

# Debian packages: graphviz draws the model architecture; chromium runs the browser test.
demo-deps:
	@command -v dot >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq graphviz; }

test-deps: demo-deps
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

# The whole pipeline on a small synthetic demo dataset, in $(DEMO_DIR)/ with the default layout.
demo: setup demo-deps demo-data demo-clean demo-train demo-serve demo-predict

demo-data: setup
	$(PYTHON) make_demo_data.py --dest $(DEMO_DIR)/archives
	cd $(DEMO_DIR) && $(CURDIR)/$(PYTHON) $(CURDIR)/data_unzipper.py archives/cifake.zip
	cd $(DEMO_DIR) && $(CURDIR)/$(PYTHON) $(CURDIR)/data_unzipper.py archives/fake_or_real.zip
	cd $(DEMO_DIR) && $(CURDIR)/$(PYTHON) $(CURDIR)/data_split_d2.py --dest data/interim/demo_cifake
	cd $(DEMO_DIR) && $(CURDIR)/$(PYTHON) $(CURDIR)/data_split_d1.py --dest data/interim/demo_fake_or_real
	cd $(DEMO_DIR) && $(CURDIR)/$(PYTHON) $(CURDIR)/data_merger.py

# Duplicates first, so that copies are not augmented and the class counts come out exact.
demo-clean: setup
	cd $(DEMO_DIR) && $(CURDIR)/$(PYTHON) $(CURDIR)/data_deleter.py --corrupt data --duplicates data --yes --quiet
	cd $(DEMO_DIR) && $(CURDIR)/$(PYTHON) $(CURDIR)/data_augmentation.py --target-per-class 600 --preview augmentation_preview.png
	cd $(DEMO_DIR) && $(CURDIR)/$(PYTHON) $(CURDIR)/move_augmented_images.py
	cd $(DEMO_DIR) && $(CURDIR)/$(PYTHON) $(CURDIR)/data_deleter.py data/interim data/augmented_train --yes

# From scratch (no download), a few hundred images and a few epochs: minutes on 2 CPU cores.
demo-train: setup
	cd $(DEMO_DIR) && $(CURDIR)/$(PYTHON) $(CURDIR)/model_training.py --weights none --epochs 4 --limit-per-class 200 --grace-epochs 2
	cd $(DEMO_DIR) && $(CURDIR)/$(PYTHON) $(CURDIR)/evaluate_model.py --data data/test --robustness --update-card --quiet

# Checks that the demo model answers, then serves it only when asked (SERVE=1): `make demo` ends.
demo-serve: setup
	cd $(DEMO_DIR) && $(CURDIR)/$(PYTHON) $(CURDIR)/app.py --check
	@if [ -n "$(SERVE)" ]; then cd $(DEMO_DIR) && $(CURDIR)/$(PYTHON) $(CURDIR)/app.py; \
	else echo "serve it: cd $(DEMO_DIR) && $(CURDIR)/$(PYTHON) $(CURDIR)/app.py   (or make demo-serve SERVE=1), then open http://127.0.0.1:5000/"; fi

# Scores the competition's unlabelled test images into its sample submission, in one run.
demo-predict: setup
	cd $(DEMO_DIR) && $(CURDIR)/$(PYTHON) $(CURDIR)/predict.py data/raw/fake_or_real/test/images \
		--submission data/raw/fake_or_real/test/sample_submission.csv \
		--output predictions/submission.csv

# The reference model: the real CIFAKE archive, prepared by the stage scripts, trained from scratch
# with the recipe of docs/results.md (--recipe cifake, realfake/training/settings.py; about two
# hours on 2 CPU cores). Everything lives in
# $(CIFAKE_DIR)/. Interrupted? Run it again: finished stages are skipped and training resumes from
# its last finished epoch.
CIFAKE_ARCHIVE ?= ../shared/datasets/cifake-train-split.zip
CIFAKE_DIR ?= cifake
ABS_ARCHIVE = $(abspath $(CIFAKE_ARCHIVE))

cifake-data: setup
	@test -f "$(ABS_ARCHIVE)" || { echo "error: CIFAKE archive not found: $(ABS_ARCHIVE) (set CIFAKE_ARCHIVE=PATH)"; exit 1; }
	mkdir -p $(CIFAKE_DIR)
	cd $(CIFAKE_DIR) && $(CURDIR)/$(PYTHON) $(CURDIR)/data_unzipper.py "$(ABS_ARCHIVE)" --quiet
	cd $(CIFAKE_DIR) && $(CURDIR)/$(PYTHON) $(CURDIR)/data_split_d2.py --source data/raw/$(basename $(notdir $(ABS_ARCHIVE))) --quiet
	cd $(CIFAKE_DIR) && $(CURDIR)/$(PYTHON) $(CURDIR)/data_merger.py --quiet
	cd $(CIFAKE_DIR) && $(CURDIR)/$(PYTHON) $(CURDIR)/data_deleter.py --duplicates data --yes --quiet

train-cifake: cifake-data demo-deps
	cd $(CIFAKE_DIR) && $(CURDIR)/$(PYTHON) $(CURDIR)/model_training.py --recipe cifake \
		$(if $(wildcard $(CIFAKE_DIR)/runs/training/epoch-*),--resume)
	cd $(CIFAKE_DIR) && $(CURDIR)/$(PYTHON) $(CURDIR)/evaluate_model.py --data data/test \
		--robustness --robustness-per-class 1000 --update-card --quiet

lint: setup
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format: setup
	$(PYTHON) -m ruff format .
	$(PYTHON) -m ruff check --fix .

# The real CIFAKE sample beside the clone, for the few tests that read real images (they skip
# without it); an explicit CIFAKE_SAMPLE_ARCHIVE, even empty, wins.
CIFAKE_SAMPLE := $(abspath ../shared/datasets/cifake-sample.zip)
ifeq ($(origin CIFAKE_SAMPLE_ARCHIVE),undefined)
ifneq ($(wildcard $(CIFAKE_SAMPLE)),)
export CIFAKE_SAMPLE_ARCHIVE := $(CIFAKE_SAMPLE)
endif
endif

# Everything, the tests that build the reference ResNet101 (marked slow) included: what CI runs.
test: setup test-deps lint
	$(PYTHON) -m pytest

# The edit-test loop: every test but the few that build the ResNet101 (slow) and the kill,
# browser and server runs (end_to_end), on both cores. `make test` runs them all, one at a time.
test-fast: setup test-deps
	$(PYTHON) -m pytest -m "not slow and not end_to_end" -n 2

# Mutation testing of the safety modules (docs/mutation.md), each against its own fast tests: not
# part of `make test`. MODULES picks some (make mutate MODULES="archive moving"); results stay
# cached in build/mutate/, so a re-run tests only the mutants of functions that changed.
MODULES ?=
mutate: $(VENV)/.mutate
	nice -n 10 $(PYTHON) tools/mutate.py --summary $(MODULES)

$(VENV)/.mutate: $(VENV)/.installed
	$(PYTHON) -m pip install --quiet -e '.[mutate]'
	touch $@
