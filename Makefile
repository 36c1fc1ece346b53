# Everything a fresh machine needs: `make demo` and `make test` install it all on first use.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
JARS   := lib/.jars-stamp

.PHONY: install demo test test-fast fuzz bench lint clean package cluster-up cluster-down cluster-status

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

# The lint and type floor first (`make lint`), then every test.
test: install lint
	$(BIN)/python -m pytest -q tests

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
