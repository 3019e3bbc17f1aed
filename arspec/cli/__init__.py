"""The `arspec` command line: one module per command."""
