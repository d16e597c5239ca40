"""The package's layering: the library never imports the command-line apps."""

import ast
from pathlib import Path

import qflow_jax

PACKAGE = Path(qflow_jax.__file__).parent
# the command line, the apps themselves, and the deprecated aliases of old paths
ALLOWED = {"cli.py", "_deprecated.py"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_the_library_never_imports_the_apps():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "apps" or str(rel) in ALLOWED:
            continue
        if any(m.startswith("qflow_jax.apps") for m in _imports(path)):
            offenders.append(str(rel))
    assert offenders == []
