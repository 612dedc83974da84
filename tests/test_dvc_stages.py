"""dvc.yaml tells the truth: each stage lists the code it runs and the params sections it reads.

The code a stage runs is its module and every `pipelines` module that module imports, directly or not
(grimp's import graph, imports inside functions included). DVC reruns a stage only when a listed dep
changes, so a missing file means a stale output after a code change, and an extra one a needless rerun.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

from pipelines.config import Params
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.unit

STAGE_MODULE = re.compile(r"python -m (pipelines\.\w+)")
# Params properties that read a section: `params.tracking_uri` is mlflow.tracking_uri
PROPERTY_SECTIONS = {"tracking_uri": "mlflow"}


@cache
def _graph() -> object:
    import grimp

    return grimp.build_graph("pipelines")


def _stages() -> dict[str, dict]:
    return yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]


def _module_file(module: str) -> str:
    path = Path(*module.split("."))
    return str(path / "__init__.py") if (REPO_ROOT / path).is_dir() else f"{path}.py"


def _runs(module: str) -> set[str]:
    """`module`, what it imports (directly or not) and the packages on the way: importing a.b.c runs
    a/__init__.py and a/b/__init__.py too, and whatever those import."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        m = todo.pop()
        if m in seen or not m.startswith("pipelines"):
            continue
        seen.add(m)
        todo += list(_graph().find_upstream_modules(m))  # type: ignore[attr-defined]
        todo += [m.rsplit(".", i)[0] for i in range(1, m.count(".") + 1)]
    return seen


def _only_docstring(path: str) -> bool:
    """A package __init__ that holds a docstring and nothing else runs no code."""
    body = ast.parse((REPO_ROOT / path).read_text()).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def _code(stage: dict) -> set[str]:
    """Files of the code a stage runs: its module and every pipelines module that importing it runs."""
    match = STAGE_MODULE.search(stage["cmd"])
    assert match, f"stage cmd {stage['cmd']!r} is not `python -m pipelines.<stage>`"
    files = {_module_file(m) for m in _runs(match.group(1))}
    return {f for f in files if not (f.endswith("__init__.py") and _only_docstring(f))}


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def _sections_read(files: set[str]) -> set[str]:
    """params.yaml sections the code reads (`params.<section>`), plus `data`: every stage's range."""
    sections = {name: field.alias or name for name, field in Params.model_fields.items() if name != "root"}
    found = {"data"}  # stage_cli passes data.start / data.end to every stage
    for f in files:
        for attr in re.findall(r"\bparams\.(\w+)", (REPO_ROOT / f).read_text()):
            if attr in sections:
                found.add(sections[attr])
            elif attr in PROPERTY_SECTIONS:
                found.add(PROPERTY_SECTIONS[attr])
    return found


@pytest.mark.parametrize("name", sorted(_stages()))
def test_stage_lists_exactly_the_code_it_runs(name: str) -> None:
    stage = _stages()[name]
    deps = [str(d) for d in stage.get("deps", [])]
    code = _code(stage)
    missing = sorted(f for f in code if not _covered(f, deps))
    assert not missing, f"dvc.yaml stage {name!r} runs {missing} but does not list them in deps"
    listed_code = [d for d in deps if d.startswith("pipelines/") and d.endswith(".py")]
    extra = sorted(d for d in listed_code if d not in code)
    assert not extra, f"dvc.yaml stage {name!r} lists {extra}, which it never imports"


@pytest.mark.parametrize("name", sorted(_stages()))
def test_stage_lists_the_params_sections_it_reads(name: str) -> None:
    stage = _stages()[name]
    listed = {str(p).split(".")[0] for p in stage.get("params", [])}
    missing = sorted(_sections_read(_code(stage)) - listed)
    assert not missing, f"dvc.yaml stage {name!r} reads params {missing} but does not list them"
