"""The shared layer every stage may use: paths, errors, the pin, the series, venvs."""
