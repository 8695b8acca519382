"""`python -m s2d.engine.cli`: the `s2d` command."""

from s2d.engine.cli import entrypoint

entrypoint()
