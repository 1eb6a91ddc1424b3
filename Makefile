# The two commands a newcomer needs:
#   make demo   venv + install + the whole loop on the bundled digits competition
#   make test   venv + install + the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kit-installed
# albumentations asks PyPI for a newer release on import unless this is set; kit runs offline
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: install system-deps demo host-demo test lint bench clean

install: system-deps $(STAMP)

# Debian packages the tests use for real: PostgreSQL (kit host --db), chromium + chromedriver
# (pages checked in a real browser). Installed when missing and we may (root with apt-get).
SYSTEM_PACKAGES := postgresql chromium chromium-driver
system-deps:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null \
		&& ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing $(SYSTEM_PACKAGES) (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	else echo "warning: install $(SYSTEM_PACKAGES) for the browser and PostgreSQL tests" >&2; fi

# torch and torchvision are pinned to the releases that lie on these machines' local disk
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

competitions/digits/kit.toml:
	$(BIN)/kit new digits --example digits

demo: install competitions/digits/kit.toml
	$(BIN)/kit run -C competitions/digits -m "make demo"
	$(BIN)/kit leaderboard -C competitions/digits

# the digits competition hosted on 127.0.0.1:8800 with three teams and a baseline (tokens printed)
host-demo: install
	$(BIN)/kit host demo --port 8800

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
