"""One driver module per command of the CLI."""
