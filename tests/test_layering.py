"""The package's layers: a lower layer never imports a higher one (imports under TYPE_CHECKING are hints only)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "lit_pref"
#: layer -> the packages it must not import
FORBIDDEN = {
    "models": ("algorithms", "callbacks", "commands", "builtin", "cli", "data", "sampling"),
    "sampling": ("algorithms", "callbacks", "commands", "builtin", "cli", "data"),
    "data": ("algorithms", "callbacks", "commands", "builtin", "cli", "sampling"),
    "tasks": ("algorithms", "callbacks", "commands", "builtin", "cli", "data", "models", "sampling"),
    "losses.py": ("algorithms", "callbacks", "commands", "builtin", "cli", "data", "models", "sampling"),
    "algorithms": ("callbacks", "commands", "builtin", "cli"),
    "callbacks": ("commands", "builtin", "cli"),
    "builtin": ("commands", "cli"),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    hints = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hints.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.lineno not in hints:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import) and node.lineno not in hints:
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


def upward_imports() -> list[str]:
    problems = []
    for layer, forbidden in FORBIDDEN.items():
        place = PACKAGE / layer
        files = [place] if place.suffix == ".py" else sorted(place.rglob("*.py"))
        for path in files:
            for line, module in imported_modules(path):
                parts = module.split(".")
                if parts[0] == "lit_pref" and len(parts) > 1 and parts[1].removesuffix(".py") in forbidden:
                    problems.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    return problems


def test_no_layer_imports_a_higher_one():
    assert upward_imports() == []


def test_the_check_sees_an_upward_import():
    bad = PACKAGE / "models" / "_layering_probe.py"
    bad.write_text("from lit_pref.algorithms.base import PolicyModule\n")
    try:
        assert upward_imports() == ["lit_pref/models/_layering_probe.py:1 imports lit_pref.algorithms.base"]
    finally:
        bad.unlink()
