# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= $(shell scripts/find-python)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: run run-prod test lint docs bench venv services clean

$(VENV)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	touch $@

venv: $(VENV)/.installed

## make run: venv, install, migrate SQLite, demo users, daphne on 127.0.0.1:$(PORT) (in-memory layer)
run: venv
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py demo_users
	@echo "Serving the demo on http://127.0.0.1:$(PORT)/ (Ctrl-C stops it)"
	exec $(BIN)/daphne -b 127.0.0.1 -p $(PORT) project.asgi:application

## make run-prod: Redis, collectstatic, migrate, demo users, two daphne (REDIS_URL) behind nginx on 127.0.0.1:8080
run-prod: venv
	scripts/run-prod

## make test: venv, install, services the tests use, then the whole suite in TEST_WORKERS processes
## (pytest-xdist; each test module stays in one worker, each worker has a Redis database of its own;
## the 30 slowest steps are listed at the end, to keep the suite under its 15 minutes)
TEST_WORKERS ?= 2
test: venv services
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=30

services:
	scripts/ensure-services

lint: venv
	$(BIN)/ruff check .

## make docs: the documentation site (docs/, mkdocs.yml) into site/, warnings as errors (make test builds it too)
docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

## make soak: 5,000 WebSockets + 1,000 SSE streams on daphne for 60 s at 10 msg/s; writes bench/soak/results.md
## make bench: bench extras into the venv, then the quick fan-out matrix (~10 min; Redis for the 2-process rows)
bench: venv
	$(BIN)/python -m pip install -q -r bench/requirements.txt
	$(BIN)/python bench/run.py --quick

soak: venv
	$(BIN)/python -m pip install -q -r bench/requirements.txt
	$(BIN)/python bench/soak/run.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) db.sqlite3 test-output site
