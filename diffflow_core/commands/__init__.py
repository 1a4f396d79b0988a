"""Subcommands of the ``diffflow`` CLI (see ``diffflow_core.cli``)."""
