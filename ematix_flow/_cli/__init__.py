"""The ``flow`` command line (typer + rich). The entry point is :mod:`.main`; each
command or command group lives in a module of its own here."""
