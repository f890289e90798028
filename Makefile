# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTANCE ?= instance
export RANDOMIZER_INSTANCE_PATH ?= $(abspath $(INSTANCE))
# The suite in two processes (one per core), a test module per process at a time, so that
# module and browser fixtures are made once per process. PYTEST_WORKERS= runs it in one.
PYTEST_WORKERS ?= -n 2 --dist loadfile

.PHONY: run test test-reliability lint typecheck translations translations-update bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(VENV)/.installed $@

## translations: compile the catalogues (.po -> .mo; the .mo files are not in git)
translations: $(VENV)/.installed
	$(BIN)/pybabel compile -d randomizer/translations

## translations-update: re-extract every marked string and merge it into the catalogues
translations-update: $(VENV)/.installed
	$(BIN)/pybabel extract -F babel.cfg -k _l -k lazy_gettext -k N_ --project randomizer \
		--copyright-holder randomizer --msgid-bugs-address "" \
		-o randomizer/translations/messages.pot .
	$(BIN)/pybabel update -i randomizer/translations/messages.pot -d randomizer/translations

## run: install, create the demo instance when empty, serve on http://127.0.0.1:5000
run: $(VENV)/.installed translations
	@if [ ! -e "$(RANDOMIZER_INSTANCE_PATH)/master.key" ] && [ -z "$$RANDOMIZER_DATABASE_URL" ]; then \
		$(BIN)/randomizer demo; \
	else \
		$(BIN)/randomizer init && $(BIN)/randomizer demo --logins-only; \
	fi
	$(BIN)/randomizer run --host 127.0.0.1 --port 5000

## test: install with test extras and run the whole suite (SQLite and PostgreSQL)
test: $(VENV)/.installed-test translations
	@command -v chromium >/dev/null 2>&1 || ./scripts/install-chromium.sh
	./scripts/ensure-postgres.sh
	$(BIN)/ruff check randomizer tests bench
	$(BIN)/mypy
	$(BIN)/pytest $(PYTEST_WORKERS) $(PYTEST_ARGS)
	$(BIN)/python scripts/reliability.py

## test-reliability: workers SIGKILLed and PostgreSQL restarted under load, on a private
## cluster it creates and removes (about 2 minutes)
test-reliability: $(VENV)/.installed-test
	$(BIN)/python scripts/reliability.py

lint:
	$(BIN)/ruff check randomizer tests bench
	$(BIN)/ruff format --check randomizer tests bench

typecheck:
	$(BIN)/mypy

bench: $(VENV)/.installed-test
	$(BIN)/python bench/lists.py
	$(BIN)/python bench/audit.py
	$(BIN)/python bench/randomize_load.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
