"""Files a data scientist edits beside params.yaml (the request feature spec, the behavioural cases):
YAML validated by a pydantic model, refused with the file and the offending entry named."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from pipelines.errors import StageError

M = TypeVar("M", bound=BaseModel)


def load_declared(path: Path, model: type[M], what: str, param: str, **extra: Any) -> M:
    """`path` parsed as YAML and validated as `model` (`extra` keys added); StageError naming the file,
    the param that names it (when missing) or each offending entry (when invalid)."""
    if not path.is_file():
        raise StageError(f"{path}: {what} not found (params {param})")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise StageError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise StageError(f"{path}: {what} must be a mapping at the top level")
    try:
        return model.model_validate({**raw, **extra})
    except ValidationError as err:
        lines = [f"{path}: invalid {what}"]
        lines += [f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]
        raise StageError("\n".join(lines)) from None
