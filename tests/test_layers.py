"""Rules of the code's layout that a reviewer should not have to remember."""
from __future__ import annotations

import ast
from functools import lru_cache
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


def _calls(path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every call in a module: `db.session.rollback()` is
    'db.session.rollback'."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            parts, target = [], node.func
            while isinstance(target, ast.Attribute):
                parts.append(target.attr)
                target = target.value
            if isinstance(target, ast.Name):
                parts.append(target.id)
            found.append((node.lineno, ".".join(reversed(parts))))
    return found


def test_routes_neither_commit_nor_roll_back():
    """A request is one unit of work, committed or rolled back by the request wrapper
    (app.unit_of_work.App); a route that must save something before it answers says why with
    commit_now, and one that answers a refusal itself uses `refused`."""
    found = []
    for path in sorted(APP.rglob("*routes.py")):
        found += [f"{path.relative_to(APP.parent)}:{line} {name}()"
                  for line, name in _calls(path)
                  if name.split(".")[-1] in ("commit", "rollback")]
    assert found == []


def _imported_app_modules(path: Path, top_only: bool = False) -> list[tuple[int, str]]:
    """(line, module) of every import of an app module in a file, at the top or (unless
    `top_only`) in a function."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_only else ast.walk(tree)
    found = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("app"):
            if node.module == "app":
                found += [(node.lineno, f"app.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names
                      if alias.name.startswith("app.")]
    return found


def _top_name(module: str) -> str:
    """The package (or module directly under app/) a module belongs to: app.work.ledger is
    'work', app.jobs is 'jobs'."""
    return module.split(".")[1]


@lru_cache(maxsize=None)
def _imports_of(name: str, top_only: bool = False) -> frozenset[str]:
    """The packages and modules under app/ that the package or module `name` imports."""
    target = APP / name
    files = sorted(target.rglob("*.py")) if target.is_dir() else [APP / f"{name}.py"]
    return frozenset({_top_name(module) for path in files if path.exists()
                      for _line, module in _imported_app_modules(path, top_only)} - {name})


def _reach(start: str, top_only: bool = False) -> set[str]:
    """Every package and module under app/ that `start` imports, directly or through others
    (counting imports inside functions unless `top_only`); `start` itself if it is imported
    back."""
    seen, todo = set(), list(_imports_of(start, top_only))
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += _imports_of(name, top_only)
    return seen


def _in_a_circle(top_only: bool) -> set[str]:
    """The packages that import themselves back through others."""
    names = {path.stem if path.suffix else path.name for path in APP.iterdir()
             if (path.is_dir() and (path / "__init__.py").exists()) or path.suffix == ".py"}
    names.discard("__init__")
    return {name for name in names if name in _reach(name, top_only)}


# The modules under app/ that everything may build on: they import nothing but one another.
BASE = {"actors", "bulk", "errors", "extensions", "jobs", "models", "replica", "types",
        "unit_of_work"}


def test_the_outbox_imports_no_feature_package():
    """The features register their handlers with the outbox; it names none of them."""
    assert _reach("outbox") <= BASE


def test_the_audit_trail_imports_nothing_above_the_base():
    """The hash chain is written by everything; its pages, alert mail and commands live in
    app/auditors, above it."""
    assert _reach("audit") <= BASE | {"outbox"}


def test_no_package_imports_itself_back_through_the_imports_at_the_top_of_modules():
    assert _in_a_circle(top_only=True) == set()


def test_the_circle_through_imports_inside_functions_does_not_grow():
    """Counting the imports inside functions, these still reach one another in a circle
    (the write path's late calls into the kinds, SLA and policy; the mail and web helpers
    that features and kinds share); no other package may join them."""
    assert _in_a_circle(top_only=False) <= {
        "admin", "api", "approvals", "auth", "integrations", "mail", "policy", "queues", "web",
        "webhooks", "work", "extensions", "replica"}


# create_app says once, above its first import, why every app module it loads is imported
# inside it (the package's __init__ runs whenever any app module is imported).
REASON = "# Imported here"


def test_every_import_inside_a_function_says_why_it_is_not_at_the_top():
    """An app module imported inside a function has its reason written above it (a circle it
    would close, a heavy module only one path needs, create_app's loading): without one it
    belongs at the top of its module, where the layer tests see it."""
    unexplained = []
    for path in sorted(APP.rglob("*.py")):
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines), str(path))
        top = {id(node) for node in tree.body}
        covered: set[int] = set()  # create_app's imports, under its one comment
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == "create_app":
                first = min((n.lineno for n in ast.walk(node) if isinstance(n, ast.ImportFrom)),
                            default=None)
                if first and any(REASON in line for line in lines[node.lineno:first]):
                    covered |= {id(n) for n in ast.walk(node)}
        for node in ast.walk(tree):
            if (not isinstance(node, ast.ImportFrom) or id(node) in top or id(node) in covered
                    or not (node.module or "").startswith("app")):
                continue
            above = lines[max(0, node.lineno - 4):node.lineno]  # the comment, and the line
            if not any(REASON in line for line in above):
                unexplained.append(f"{path.relative_to(APP.parent)}:{node.lineno}")
    assert unexplained == []
