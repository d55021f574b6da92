"""make test: the harness, the runtime test venv, the upstream subset."""
