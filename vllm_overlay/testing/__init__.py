"""make test: the harness (its stages), their typed results and the report, the runtime
test venv, the upstream subset."""
