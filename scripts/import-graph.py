#!/usr/bin/env python3
"""Check that avsc's imports follow the data flow: no arrow against the stage order.

    scripts/import-graph.py            (run from anywhere; reads src/avsc, imports nothing)

The stages, in the order data flows through them:

    media -> data -> features -> models -> training -> evaluation -> inference

A stage may import its own modules and the stages before it, never one after it (so
``training`` never imports ``evaluation``). Below every stage sit the shared pieces
(``records``, ``scoring``, ``storage``, ``config``, ``errors``, ``labels``, ``runtime``):
they import one another but no stage. The command line (``cli``), ``preflight`` and the
package's own ``__init__``/``__main__`` sit on top and may import anything.

Imports inside functions count as well as those at the top of a module: a lazy import is
still a dependency, only a later one. Prints one line per arrow against the order
(``file:line: importer imports imported (why)``), then a count; exit status 1 when there
is any, 0 when there is none.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = "avsc"
STAGES = ("media", "data", "features", "models", "training", "evaluation", "inference")
LOW = ("records", "scoring", "storage", "config", "errors", "labels", "runtime")


def layer(module: str) -> str | None:
    """The stage or shared piece an ``avsc.*`` module belongs to (None: the top, or not avsc)."""
    parts = module.split(".")
    if parts[0] != PACKAGE or len(parts) < 2:
        return None
    return parts[1] if parts[1] in STAGES + LOW else None


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(tree: ast.Module, module: str, is_package: bool) -> list[tuple[int, str]]:
    """``(line, module)`` for every import in the file, relative ones resolved."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package this module is in
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from avsc import training` names a subpackage, `from avsc.x import f` a module.
            if target == PACKAGE:
                found.extend((node.lineno, f"{PACKAGE}.{alias.name}") for alias in node.names)
            else:
                found.append((node.lineno, target))
    return found


def violation(importer: str, imported: str) -> str | None:
    """Why ``importer`` must not import ``imported``, or None when it may."""
    source, target = layer(importer), layer(imported)
    if source is None or target is None or source == target:
        return None
    if source in LOW and target in STAGES:
        return f"{source} is shared below every stage and imports none"
    if source in STAGES and target in STAGES and STAGES.index(target) > STAGES.index(source):
        return f"{source} -> {target}: against the stage order"
    return None


def check(src: Path) -> list[str]:
    problems = []
    for path in sorted((src / PACKAGE).rglob("*.py")):
        module = module_name(path, src)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, imported in imported_modules(tree, module, path.name == "__init__.py"):
            why = violation(module, imported)
            if why:
                problems.append(f"{path.relative_to(src.parent)}:{line}: {module} imports {imported} ({why})")
    return problems


def main() -> int:
    src = Path(__file__).resolve().parent.parent / "src"
    problems = check(src)
    for problem in problems:
        print(problem)
    print(f"{len(problems)} import(s) against the stage order" if problems else "imports follow the stage order")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
