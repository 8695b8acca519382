"""The bookkeeping shared by s2d's compat modules, one per library whose internals s2d touches
(`s2d.cluster.compat_ray`, `s2d.actors.compat_vllm`, `s2d.training.compat_deepspeed`,
`s2d.engine.data.compat_datasets`; docs/architecture.md, "Internals we depend on").

Each compat path is one internal (a private attribute, an internal module, an undocumented flag or file key) and a
probe that says whether the installed library still has it. A path is probed once per process, the first time it
is asked about (at the start of the stage that uses it); a path whose internal is gone is switched off with one
line, "s2d: <library> <version> no longer has <internal>: <what s2d does instead>", or, where s2d has no safe
fallback, raises that line. Nothing here imports the library.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("s2d.compat")


class LibraryIncompatible(ValueError):
    """A library no longer has an internal that a job needs and s2d has no fallback for (a ValueError: the CLI
    reports it in one line, like a job that cannot run as written)."""


@dataclass(frozen=True)
class Internal:
    what: str  # the internal, as the warning names it
    instead: str  # what s2d does without it
    probe: Callable[[], bool]  # True while the installed library has it; an exception counts as "gone"
    required: bool = False  # no safe fallback: asking about it raises LibraryIncompatible instead of warning


class Internals:
    """The compat paths of one library, probed on first use, each reported once per process."""

    def __init__(self, library: str, distributions: tuple[str, ...], paths: dict[str, Internal]):
        self.library, self.distributions, self.paths = library, distributions, paths
        self._on: dict[str, bool] = {}

    def fresh(self) -> Internals:
        """The same paths, none probed yet (a test that switches a path off works on its own copy)."""
        return Internals(self.library, self.distributions, self.paths)

    def version(self) -> str:
        for distribution in self.distributions:
            try:
                return importlib.metadata.version(distribution)
            except importlib.metadata.PackageNotFoundError:
                continue
        return "(not installed)"

    def enabled(self, name: str) -> bool:
        """Whether path `name` is on: its internal was there when first probed, and nothing switched it off."""
        if name not in self._on:
            try:
                found = bool(self.paths[name].probe())
            except Exception:  # noqa: BLE001 - whatever the probe hit, the internal is not as s2d knows it
                found = False
            self._on[name] = found
            if not found:
                self._report(name)
        return self._on[name]

    def switch_off(self, name: str, cause: object = None) -> None:
        """For a path whose internal turned out different at run time (an attribute missing mid-execution)."""
        if self._on.get(name, True):
            self._on[name] = False
            self._report(name, cause)

    def check(self, *names: str) -> dict[str, bool]:
        """Probe `names` (default: every path) and say which are on."""
        return {name: self.enabled(name) for name in names or self.paths}

    def message(self, name: str, cause: object = None) -> str:
        path = self.paths[name]
        because = f" ({cause})" if cause is not None else ""
        return f"s2d: {self.library} {self.version()} no longer has {path.what}{because}: {path.instead}"

    def _report(self, name: str, cause: object = None) -> None:
        if self.paths[name].required:
            del self._on[name]  # asked again, it raises again
            raise LibraryIncompatible(self.message(name, cause))
        log.warning(self.message(name, cause))
