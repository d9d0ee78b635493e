"""The layout rules of docs/architecture.md, checked on the source: layering, public library
APIs only, one place for MLflow's global state, small modules, self-contained docs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "mammo_pipeline"
STAGES = (
    "common",
    "stats",
    "imaging",
    "data",
    "validation",
    "analysis",
    "training",
    "registry",
    "monitoring",
    "serving",
    "orchestration",
    "cli",
)
#: stage -> project packages it must never import (arrows only point down the lifecycle).
FORBIDDEN: dict[str, set[str]] = {
    "common": set(STAGES) - {"common"},
    "stats": set(STAGES) - {"stats"},
    "imaging": set(STAGES) - {"imaging", "common"},
    "data": {"validation", "analysis", "training", "registry", "serving", "orchestration", "cli"}
    | {"monitoring"},
    "analysis": {"validation", "training", "registry", "monitoring", "serving", "orchestration"}
    | {"cli"},
    "validation": {"training", "registry", "monitoring", "serving", "orchestration", "cli"},
    "training": {"validation", "registry", "monitoring", "serving", "orchestration", "cli"},
    "registry": {"monitoring", "serving", "orchestration", "cli"},
    # the service logs predictions through monitoring: monitoring never imports serving
    "monitoring": {"analysis", "serving", "orchestration", "cli"},
    "serving": {"orchestration", "cli"},
    "orchestration": {"cli"},
}
COMPAT = LIB / "common" / "compat.py"
MLFLOW_STATE = LIB / "common" / "mlflow_access.py"
MAX_LINES = 400


def library_files() -> list[Path]:
    return sorted(LIB.rglob("*.py")) + sorted((ROOT / "serving").rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def stage_of(path: Path) -> str | None:
    rel = path.relative_to(LIB).parts
    return rel[0] if len(rel) > 1 and rel[0] in STAGES else None


def test_imports_only_point_down_the_lifecycle() -> None:
    problems = []
    for path in sorted(LIB.rglob("*.py")):
        stage = stage_of(path)
        if stage not in FORBIDDEN:
            continue
        for module in imported_modules(path):
            parts = module.split(".")
            if parts[0] == "mammo_pipeline" and len(parts) > 1 and parts[1] in FORBIDDEN[stage]:
                problems.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not problems, "\n".join(problems)


def test_no_private_library_internals_outside_compat() -> None:
    pattern = re.compile(r"_bentoml_impl|bentoml\._internal|_save_example")
    found = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in library_files()
        if p != COMPAT
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, found


def test_mlflow_global_state_and_environment_written_in_one_place() -> None:
    pattern = re.compile(r"set_tracking_uri\(|set_registry_uri\(|os\.environ\[[^\]]+\]\s*=")
    found = [
        f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
        for p in library_files()
        if p != MLFLOW_STATE
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, found


def test_one_mlflow_client_factory() -> None:
    pattern = re.compile(r"MlflowClient\(")
    found = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in library_files()
        if p != MLFLOW_STATE
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, found


def test_long_modules_say_why() -> None:
    """No module over ~400 lines unless its docstring says why ("Longer than ... because")."""
    long = []
    for path in library_files():
        n = len(path.read_text().splitlines())
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if n > MAX_LINES and "because" not in doc.lower():
            long.append(f"{path.relative_to(ROOT)}: {n} lines")
    assert not long, long


@pytest.mark.parametrize("stage", STAGES)
def test_every_package_says_what_it_owns_and_may_import(stage: str) -> None:
    doc = ast.get_docstring(ast.parse((LIB / stage / "__init__.py").read_text())) or ""
    assert doc, f"mammo_pipeline/{stage}/__init__.py has no docstring"
    assert re.search(r"may import|imports? (only|nothing)", doc, re.I), doc


def test_docs_link_only_files_inside_the_repository() -> None:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    problems = []
    for doc in docs:
        text = doc.read_text()
        if "../shared" in text or "DESIGN.md" in text:
            problems.append(f"{doc.name} points outside the repository")
        for target in re.findall(r"\]\(([^)#\s]+)", text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            if not (doc.parent / target).exists():
                problems.append(f"{doc.name}: broken link {target}")
    for path in library_files():
        if "shared/DESIGN" in path.read_text():
            problems.append(f"{path.relative_to(ROOT)} points at ../shared/DESIGN.md")
    assert not problems, problems
    assert (ROOT / "docs" / "architecture.md").is_file()
