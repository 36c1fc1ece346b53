# Everything a fresh machine needs: `make demo` and `make test` install it all on first use.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
JARS   := lib/.jars-stamp

.PHONY: install demo test test-fast bench lint clean

install: $(STAMP) $(JARS)

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(JARS): $(STAMP) job/jars.py $(wildcard java/io/inboxflow/flink/*.java)
	$(BIN)/python -m job.jars lib
	touch $@

demo: install
	$(BIN)/inboxflow demo

test: install
	$(BIN)/python -m pytest -q tests

test-fast: install
	$(BIN)/python -m pytest -q tests/unit

bench: install
	$(BIN)/python -m bench.run

lint: install
	$(BIN)/ruff check job udfs tests bench

clean:
	rm -rf $(VENV) lib var build *.egg-info
