"""Subcommands of the tickpipe CLI, one module each."""
