"""The public API of each layer, and the one direction of imports: replay <- encoders <- simulator."""
import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {"replay": set(), "encoders": {"replay"}, "simulator": {"replay", "encoders"}}


@pytest.mark.parametrize("package", sorted(ALLOWED) + ["replay.importers"])
def test_every_public_name_imports(package):
    module = importlib.import_module(package)
    assert module.__all__, f"{package} exports nothing"
    for name in module.__all__:
        assert getattr(module, name) is not None


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_go_one_way(package):
    ours = set(ALLOWED)
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in ours and top != package:
                    assert top in ALLOWED[package], f"{path.relative_to(ROOT)} imports {name}"
