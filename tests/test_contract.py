"""pipelines.contract: the names stages hand each other, and the Feast definitions built from them."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from pipelines import contract
from tests.conftest import make_project


@pytest.mark.integration
def test_feast_view_schema_is_the_contract_feature_schema(tmp_path: Path) -> None:
    """feature_repo/definitions.py, loaded the way the pipeline applies it, declares exactly the contract's
    feature columns with matching types: a column added to one and not the other fails here."""
    from feast import FeatureView
    from feast.types import Float64, Int64

    from pipelines.engines.feast_store import load_definitions

    params = make_project(tmp_path / "project")
    (view,) = [o for o in load_definitions(params) if isinstance(o, FeatureView)]
    arrow_of = {Int64: pa.int64(), Float64: pa.float64()}
    declared = {f.name: arrow_of[f.dtype] for f in view.features}
    assert declared == contract.FEATURE_TYPES
    assert [f.name for f in view.features] == contract.FEATURE_COLUMNS  # same order too
    assert view.name == contract.FEATURE_VIEW
    assert view.entities == ["entity"]
    assert view.batch_source.timestamp_field == contract.TIMESTAMP


@pytest.mark.unit
def test_feature_schema_holds_the_join_keys_then_the_features() -> None:
    names = contract.FEATURE_SCHEMA.names
    assert names[:2] == [contract.ENTITY_KEY, contract.TIMESTAMP]
    assert names[2:] == contract.FEATURE_COLUMNS
    assert set(contract.REQUIRED_COLUMNS) <= set(contract.CANONICAL_COLUMNS)
    assert not set(contract.OPTIONAL_COLUMNS) & set(contract.REQUIRED_COLUMNS)
    assert len({contract.CHAMPION, contract.CHALLENGER, contract.PREVIOUS}) == 3
