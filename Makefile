# Everything a fresh machine needs: `make demo` and `make test` install it all on first use.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
JARS   := lib/.jars-stamp

.PHONY: install demo demo-shop test test-fast fuzz bench lint clean package cluster-up cluster-down cluster-status chromium

install: $(STAMP) $(JARS)

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(JARS): $(STAMP) job/dev/jars.py job/jvm.py $(wildcard java/io/inboxflow/flink/*.java)
	$(BIN)/python -m job.dev.jars lib
	touch $@

demo: install
	$(BIN)/inboxflow demo

# The demo shop page, the collector and the job, live on a local broker: prints the page's URL
# (http://127.0.0.1:8088/shop/) and every email request as it comes; Ctrl-C stops it all.
demo-shop: install
	$(BIN)/inboxflow demo-shop

# The lint and type floor first (`make lint`), then every test.
test: install lint chromium
	$(BIN)/python -m pytest -q tests

# Debian's chromium for the headless-browser test of `inboxflow preview`
# (tests/e2e/test_preview_browser.py, which fails without it): installed with apt when
# missing, as root or through sudo (apt-get update only when the plain install fails).
CHROMIUM ?= /usr/bin/chromium

chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ]; then as_root=; \
	  elif command -v sudo >/dev/null 2>&1; then as_root=sudo; \
	  else echo "make test needs Debian's chromium ($(CHROMIUM)): run 'apt-get install -y chromium' as root (no sudo here)" >&2; exit 1; fi; \
	  echo "installing Debian's chromium: apt-get install -y chromium"; \
	  $$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium \
	    || { $$as_root apt-get update -q && $$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } \
	    || { echo "could not install chromium with apt-get (see above)" >&2; exit 1; }; \
	  test -x $(CHROMIUM) || { echo "chromium is installed but $(CHROMIUM) is missing" >&2; exit 1; }; \
	fi

test-fast: install
	$(BIN)/python -m pytest -q tests/unit

# The property-based fuzz tests with 20x the examples of `make test` and a new random seed
# each run (failing examples are kept in var/hypothesis and replayed first next time).
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q tests/unit/test_fuzz.py --hypothesis-show-statistics

bench: install
	$(BIN)/python -m bench.run

# A local Flink standalone cluster from the installed PyFlink (FLINK_HOME var/flink, web UI
# http://127.0.0.1:$(PORT)); the packaged job for it (var/package) and `inboxflow submit`.
TASKMANAGERS ?= 1
SLOTS        ?= 2
PORT         ?= 8081

package: install
	$(BIN)/python -m job.submit

cluster-up: install
	$(BIN)/python -m job.dev.cluster up --taskmanagers $(TASKMANAGERS) --slots $(SLOTS) --port $(PORT)

cluster-down:
	test ! -x $(BIN)/python || $(BIN)/python -m job.dev.cluster down

cluster-status:
	$(BIN)/python -m job.dev.cluster status

# ruff (rules and format in pyproject.toml) and mypy (config and strict modules there too).
lint: $(STAMP)
	$(BIN)/ruff check --quiet job udfs tests bench
	$(BIN)/ruff format --check --quiet job udfs tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) lib var build *.egg-info
