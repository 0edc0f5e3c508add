"""One module per ``unigen`` subcommand, each exposing ``run(args: argparse.Namespace) -> int``.

Imported only when its command runs (``unigen.orchestrator.cli`` dispatches by name), so a module here
may import what it needs at its top, as long as ``unigen --help`` never loads it.
"""
