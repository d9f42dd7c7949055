"""Placeholder until its commands land (see cli/__init__.py)."""

import typer

app = typer.Typer(no_args_is_help=True)
