# `make run` starts the whole platform; `make test` runs the suite. Both set themselves up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app app:create_app
PORT ?= 5000
# In development the API listens on this machine only (the Procfile's default, for hosts, is 0.0.0.0).
WEB_ADDRESS ?= 127.0.0.1
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: run test install services db bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

services:
	./scripts/ensure_services.sh

.env: | install
	$(BIN)/python scripts/write_dev_env.py .env

db: install services .env
	$(FLASK) create-db
	$(FLASK) db upgrade

run: db
	@echo ""
	@echo "  API      http://127.0.0.1:$(PORT)/api/v1"
	@echo "  Docs     http://127.0.0.1:$(PORT)/docs   (OpenAPI: /openapi.json)"
	@echo "  Metrics  http://127.0.0.1:$(PORT)/metrics   (Prometheus; from this machine only)"
	@echo "  Flower   http://127.0.0.1:$${FLOWER_PORT:-5555}   (user and password: FLOWER_BASIC_AUTH in .env)"
	@echo "  Mail     http://127.0.0.1:$${MAIL_CATCHER_PORT:-1080}   (every email sent, verification links included)"
	@echo ""
	PORT=$(PORT) WEB_ADDRESS=$(WEB_ADDRESS) $(BIN)/honcho start --port $(PORT) web worker beat flower mail

# The suite runs in TEST_WORKERS pytest-xdist processes, each on a database and a Redis index of its
# own (tests/conftest.py); a test file's tests all run in the same one.
TEST_WORKERS ?= 2

test: install services
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: install services
	@command -v wrk >/dev/null || apt-get install -y wrk >/dev/null
	@for script in bench/*.py; do \
		case "$$script" in */harness.py|*/__init__.py) continue;; esac; \
		echo "== $$script"; $(BIN)/python "$$script" || exit 1; \
	done

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info
