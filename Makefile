# The two commands a newcomer needs:
#   make demo   venv + install + the whole loop on the bundled digits competition
#   make test   venv + install + the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kit-installed
# albumentations asks PyPI for a newer release on import unless this is set; kit runs offline
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: install demo test lint bench clean

install: $(STAMP)

# torch and torchvision are pinned to the releases that lie on these machines' local disk
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

competitions/digits/kit.toml:
	$(BIN)/kit new digits --example digits

demo: install competitions/digits/kit.toml
	$(BIN)/kit run -C competitions/digits --quiet -m "make demo"
	$(BIN)/kit leaderboard -C competitions/digits

test: install
	$(BIN)/ruff check kit tests benchmarks
	$(BIN)/ruff format --check kit tests benchmarks
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check --fix kit tests benchmarks
	$(BIN)/ruff format kit tests benchmarks

clean:
	rm -rf competitions/digits/data competitions/digits/runs competitions/digits/submissions \
		competitions/digits/folds.csv
