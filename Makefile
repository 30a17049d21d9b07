.PHONY: run test setup lint bench

run:  ## the main job: set up, start the service, run a sweep, show the results
	bash scripts/run.sh

test:  ## set up and run every test (SQLite and a throwaway PostgreSQL)
	bash scripts/test.sh

setup:
	bash scripts/setup.sh

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .
	.venv/bin/mypy
