"""The data stage comes before the model: no module of detector/data imports the model, assignment, loss or
training stages (the doctor gets a model's priors from its caller), at module level or inside a function."""

from __future__ import annotations

import ast

from ..conftest import ROOT

LATER_STAGES = ("models", "assigners", "criteria", "losses", "postprocess", "training", "deploy", "diagnostics")


def imported_modules(source: str) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def test_imported_modules_are_found_in_functions_too():
    assert imported_modules("import a.b\ndef f():\n    from detector.models import x\n") == {"a.b", "detector.models"}


def test_the_data_stage_imports_no_later_stage():
    outside = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in sorted((ROOT / "detector" / "data").rglob("*.py"))
        for module in imported_modules(path.read_text())
        if module.split(".")[:2] in [["detector", stage] for stage in LATER_STAGES]
    }
    assert outside == set()
