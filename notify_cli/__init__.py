"""The `notify` command-line interface."""
