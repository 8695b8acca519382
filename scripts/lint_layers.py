"""`make lint`'s architecture check: the layer contracts of pyproject.toml ([tool.importlinter]) and no import cycle
anywhere in the s2d package, function-level imports included.

The distribution maps the import package `s2d` over the repository's top-level folders (s2d.engine is engine/, ...).
import-linter finds a package's modules by walking its folder, so it is run on a view of the package as installed:
a temporary folder `s2d/` whose entries link to those folders.

    python scripts/lint_layers.py [--repo DIR]     exit 0: contracts kept and no cycle; 1: what broke is printed
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parent.parent
SUBPACKAGES = ("engine", "actors", "training", "cluster")  # pyproject's [tool.setuptools.package-dir]


def package_view(repo: Path, into: Path) -> Path:
    """`into/s2d/`: the package as it installs, its subpackages linked to the repository's folders."""
    package = into / "s2d"
    package.mkdir()
    for entry in (repo / "s2d").iterdir():
        (package / entry.name).symlink_to(entry)
    for name in SUBPACKAGES:
        (package / name).symlink_to(repo / name, target_is_directory=True)
    return package


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every strongly connected group of modules that import each other (directly or through others)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(root: str) -> None:  # Tarjan's algorithm, iteratively: the graph may be deep
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[module] = min(low[module], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[module])
            if low[module] == index[module]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == module:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))

    for module in sorted(graph.modules):
        if module.startswith("s2d") and module not in index:
            visit(module)
    return groups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout to check (default: this one)")
    repo = parser.parse_args(argv).repo.resolve()
    with tempfile.TemporaryDirectory(prefix="s2d-layers-") as tmp:
        package_view(repo, Path(tmp))
        env = dict(os.environ, PYTHONPATH=tmp)
        contracts = subprocess.run(
            [Path(sys.executable).parent / "lint-imports", "--no-cache", "--config", str(repo / "pyproject.toml")],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
        )
        sys.path.insert(0, tmp)
        try:
            cycles = import_cycles(grimp.build_graph("s2d", cache_dir=None))
        finally:
            sys.path.remove(tmp)
    if contracts.returncode != 0:
        print(contracts.stdout[contracts.stdout.find("Contracts") :] or contracts.stdout, contracts.stderr)
    for group in cycles:
        print(f"import cycle: {' <-> '.join(group)}")
    if contracts.returncode == 0 and not cycles:
        print("layers: contracts kept, no import cycle")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
