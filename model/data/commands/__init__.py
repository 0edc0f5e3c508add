"""Implementations of the ``unigen data`` subcommands (imported only when one runs)."""
