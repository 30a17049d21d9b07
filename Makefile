.PHONY: run test test-fast setup lint bench

run:  ## the main job: set up, start the service, run a sweep, show the results
	bash scripts/run.sh

test:  ## set up and run every test (SQLite and a throwaway PostgreSQL)
	bash scripts/test.sh

test-fast:  ## while developing: the tests that need no Ray, no PostgreSQL and are not slow
	bash scripts/setup.sh --test
	RAY_USAGE_STATS_ENABLED=0 .venv/bin/python -m pytest -q --hypothesis-profile=ci \
		-m "not ray and not postgres and not slow"

setup:
	bash scripts/setup.sh

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .
	.venv/bin/mypy
