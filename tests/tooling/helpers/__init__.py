"""Helpers shared by the tooling tests: plain modules, not test modules (nothing here is
collected); the fixtures that use them live in the conftest.py files."""
