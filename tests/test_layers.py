"""Rules of the code's layout that a reviewer should not have to remember."""
from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"


def test_no_module_imports_another_modules_private_names():
    """A name starting with an underscore is its module's own: another module that needs it
    needs a public name (the issue that split the core found seven such imports)."""
    found = []
    for path in sorted(APP.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("app"):
                found += [f"{path.relative_to(APP.parent)}:{node.lineno} {node.module}.{a.name}"
                          for a in node.names if a.name.startswith("_")]
    assert found == []
