"""The one scoring path: request features, the release (fingerprint, MLflow pyfunc), both model kinds."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.errors import StageError
from pipelines.model import packaging
from pipelines.model import release as release_lib
from pipelines.model.release import Release, ReleaseIntegrityError
from pipelines.model.request_features import load_spec, request_features
from pipelines.model.training import fit_release
from tests.conftest import shipped_spec
from tests.test_train import TINY, make_events

pytestmark = pytest.mark.integration


def _row(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "event_id": "e1",
        "entity_id": "u1",
        "event_timestamp": pd.Timestamp("2026-01-07 02:30:00", tz="UTC"),  # a Wednesday, night
        "amount": 150.0,
        "category": "travel",
        "amount_mean_hist": 50.0,
        "amount_std_hist": 25.0,
        "last_event_ts": pd.Timestamp("2026-01-07 02:00:00", tz="UTC").timestamp(),
        "txn_count_24h": 3,
    }
    return {**base, **kw}


# --------------------------------------------------------------------------------------------------
# request_features (pure, milliseconds)
# --------------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_request_features_on_hand_made_rows() -> None:
    frame = pd.DataFrame(
        [
            _row(latitude=0.0, longitude=0.0, merchant_latitude=0.0, merchant_longitude=1.0),
            _row(
                event_timestamp=pd.Timestamp("2026-01-10 14:00:00", tz="UTC"),  # Saturday afternoon
                amount=0.0,
                last_event_ts=np.nan,  # first event of the entity
                amount_std_hist=0.0,
                category=None,
                latitude=10.0,
                longitude=20.0,
                merchant_latitude=10.0,
                merchant_longitude=20.0,
            ),
        ]
    )
    f = request_features(frame, shipped_spec())
    r0, r1 = f.iloc[0], f.iloc[1]
    assert r0["amount"] == 150.0 and r0["log_amount"] == pytest.approx(np.log1p(150.0))
    assert (r0["hour"], r0["is_night"], r0["day_of_week"]) == (2.0, 1.0, 2.0)
    assert (r1["hour"], r1["is_night"], r1["day_of_week"]) == (14.0, 0.0, 5.0)
    assert r0["seconds_since_prev"] == 1800.0
    assert np.isnan(r1["seconds_since_prev"])
    assert r0["amount_to_mean_hist"] == 3.0 and r0["amount_zscore"] == 4.0
    assert np.isnan(r1["amount_zscore"])  # zero spread: undefined, not infinite
    assert r0["distance_km"] == pytest.approx(111.195, abs=0.01)  # one degree of longitude at the equator
    assert r1["distance_km"] == 0.0
    assert r0["category"] == "travel" and pd.isna(r1["category"])
    assert r0["txn_count_24h"] == 3.0
    assert "last_event_ts" not in f.columns  # absolute time only enters through seconds_since_prev
    assert list(f.index) == list(frame.index)


@pytest.mark.unit
def test_missing_optional_inputs_leave_features_out() -> None:
    frame = pd.DataFrame([_row()]).drop(columns=["category", "last_event_ts"])
    f = request_features(frame, shipped_spec())
    assert "distance_km" not in f.columns  # no coordinates
    assert "category" not in f.columns
    assert "seconds_since_prev" not in f.columns
    partial = pd.DataFrame([_row(latitude=1.0, longitude=2.0)])  # home only, no merchant location
    assert "distance_km" not in request_features(partial, shipped_spec()).columns


@pytest.mark.unit
def test_request_features_deterministic_and_timezone_agnostic() -> None:
    frame = make_events(300, 5)
    a, b = request_features(frame, shipped_spec()), request_features(frame, shipped_spec())
    pd.testing.assert_frame_equal(a, b)
    naive = frame.assign(event_timestamp=frame["event_timestamp"].dt.tz_localize(None))
    pd.testing.assert_frame_equal(request_features(naive, shipped_spec()), a)
    one = request_features(frame.iloc[[7]], shipped_spec())
    pd.testing.assert_frame_equal(one, a.iloc[[7]])


@pytest.mark.unit
def test_request_features_refuses_frame_without_required_columns() -> None:
    with pytest.raises(ValueError, match="event_timestamp"):
        request_features(pd.DataFrame({"amount": [1.0]}), shipped_spec())
    with pytest.raises(ValueError, match="null"):
        request_features(pd.DataFrame({"amount": [1.0], "event_timestamp": [pd.NaT]}), shipped_spec())


@pytest.mark.unit
def test_spec_file_errors_name_the_file_and_the_entry(tmp_path: Path) -> None:
    bad = tmp_path / "request_features.yaml"
    bad.write_text("features:\n  - {name: ratio_only, op: ratio, inputs: [amount]}\n")
    with pytest.raises(StageError, match=r"request_features.yaml: invalid(.|\n)*features.0.*ratio takes 2"):
        load_spec(bad)
    bad.write_text("features:\n  - {name: x, op: sqrt, inputs: [amount]}\n")
    with pytest.raises(StageError, match=r"features\.0\.op"):
        load_spec(bad)
    with pytest.raises(StageError, match="request feature spec not found"):
        load_spec(tmp_path / "missing.yaml")


@pytest.mark.unit
def test_a_spec_of_another_domain_trains_a_release_that_carries_it(tmp_path: Path) -> None:
    """The derivations are data: a spec with other features trains a release on exactly those, and the
    release keeps scoring with the spec it was trained with after the file changes."""
    path = tmp_path / "spec.yaml"
    path.write_text(
        "required: [event_timestamp, amount]\n"
        "features:\n"
        "  - {name: size, op: log1p, inputs: [amount]}\n"
        "  - {name: late, op: hour_below, inputs: [event_timestamp], hour: 4}\n"
        "  - {name: kind, op: category, inputs: [category]}\n"
    )
    spec = load_spec(path)
    tr, va = make_events(600, 1), make_events(300, 2)
    release, _ = fit_release(tr, va, TINY, spec=spec)
    assert release.feature_list == ["size", "late", "kind"]
    assert release.input_columns == ["event_timestamp", "amount", "category"]
    before = release.score(va)
    path.write_text("features:\n  - {name: size, op: value, inputs: [amount]}\n")  # edited after training
    again = release_lib.read_release(release.save(tmp_path / "r"))
    assert again.spec == spec and again.fingerprint == release.fingerprint
    np.testing.assert_array_equal(again.score(va), before)
    # the spec is fingerprinted: the same model under another spec is another release
    other = Release(release.feature_list, "xgboost", release.preprocessor, release.model, spec=shipped_spec())
    assert other.fingerprint != release.fingerprint


# --------------------------------------------------------------------------------------------------
# Releases: one trained pair per module, logged to MLflow once
# --------------------------------------------------------------------------------------------------


@dataclass
class Logged:
    release: Release
    other: Release  # a second, different release (for mismatched pairs)
    model_uri: str
    tracking_uri: str
    valid: pd.DataFrame


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Logged]:
    import mlflow

    root = tmp_path_factory.mktemp("mlflow")
    tracking = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking)
    tr, va = make_events(600, 1), make_events(300, 2)
    release, _ = fit_release(tr, va, TINY, spec=shipped_spec())
    # another pair: different training data, so both its preprocessor and its model differ
    other, _ = fit_release(make_events(600, 3), va, TINY.model_copy(update={"seed": 99}), spec=shipped_spec())
    exp = mlflow.create_experiment("predict-tests", artifact_location=(root / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=exp) as run:
        packaging.log_release(release, tr)
    yield Logged(release, other, f"runs:/{run.info.run_id}/release", tracking, va)


def test_release_round_trip_through_mlflow(logged: Logged) -> None:
    import mlflow

    mlflow.set_tracking_uri(logged.tracking_uri)
    loaded = packaging.load_release(logged.model_uri)
    expected = logged.release.score(logged.valid)
    assert loaded.fingerprint == logged.release.fingerprint
    assert loaded.feature_list == logged.release.feature_list and loaded.model_kind == "xgboost"
    np.testing.assert_array_equal(release_lib.score(loaded, logged.valid), expected)

    pyfunc = mlflow.pyfunc.load_model(logged.model_uri)
    out = np.asarray(pyfunc.predict(logged.valid), dtype=np.float64)
    assert ((out >= 0) & (out <= 1)).all() and len(np.unique(out)) > 2  # probabilities, not labels
    np.testing.assert_array_equal(out, expected)
    inputs = pyfunc.metadata.get_input_schema().input_names()
    assert inputs == loaded.input_columns and "merchant" not in inputs


def test_tampered_release_is_refused_at_load(logged: Logged, tmp_path: Path) -> None:
    import mlflow

    mlflow.set_tracking_uri(logged.tracking_uri)
    local = Path(mlflow.artifacts.download_artifacts(logged.model_uri, dst_path=str(tmp_path / "m")))
    release_dir = local / "artifacts" / "release"
    logged.other.save(tmp_path / "other")
    # a preprocessor fitted for another model, paired with this release's model
    shutil.copy(tmp_path / "other" / "preprocessor.pkl", release_dir / "preprocessor.pkl")
    with pytest.raises(ReleaseIntegrityError, match="fingerprint"):
        mlflow.pyfunc.load_model(str(local))
    with pytest.raises(ReleaseIntegrityError, match="mismatched"):
        release_lib.read_release(release_dir)


def test_mismatched_pair_and_wrong_expected_fingerprint_refused(logged: Logged, tmp_path: Path) -> None:
    a, b = logged.release.save(tmp_path / "a"), logged.other.save(tmp_path / "b")
    assert release_lib.read_release(a).fingerprint == logged.release.fingerprint
    shutil.copy(b / "model.ubj", a / "model.ubj")
    with pytest.raises(ReleaseIntegrityError):
        release_lib.read_release(a)
    with pytest.raises(ReleaseIntegrityError, match="expected"):
        release_lib.read_release(b, expected_fingerprint=logged.release.fingerprint)


def test_fast_transform_equals_sklearn(logged: Logged) -> None:
    frame = logged.valid.copy()
    frame.loc[frame.index[:3], "category"] = ["never-seen", None, np.nan]
    frame.loc[frame.index[3:6], "amount_mean_hist"] = np.nan
    fast = logged.release.transform(frame)
    np.testing.assert_array_equal(fast, logged.release.transform_sklearn(frame))
    assert fast.dtype == np.float32 and fast.flags.c_contiguous


def test_score_needs_the_release_inputs(logged: Logged) -> None:
    with pytest.raises(ValueError, match=r"distance_km|latitude"):
        logged.release.score(logged.valid.drop(columns=["merchant_latitude"]))
    assert logged.release.score(logged.valid.head(0)).shape == (0,)


def test_invariance_merchant_name_case_does_not_change_score(logged: Logged) -> None:
    frame = logged.valid
    shouted = frame.assign(merchant=frame["merchant"].str.upper())
    np.testing.assert_array_equal(logged.release.score(shouted), logged.release.score(frame))
    shuffled = frame.sample(frac=1.0, random_state=0)  # row order does not leak between rows
    np.testing.assert_array_equal(
        logged.release.score(shuffled), pd.Series(logged.release.score(frame), frame.index)[shuffled.index]
    )


def test_mlp_release_scores_like_xgboost(tmp_path: Path) -> None:
    tr, va = make_events(600, 1), make_events(300, 2)
    mlp, facts = fit_release(tr, va, TINY.model_copy(update={"model": "mlp"}), spec=shipped_spec())
    assert mlp.model_kind == "mlp" and facts["n_model_inputs"] > len(mlp.feature_list) - 1
    p = mlp.score(va)
    assert p.dtype == np.float64 and ((p > 0) & (p < 1)).all()
    again = release_lib.read_release(mlp.save(tmp_path / "mlp"))
    np.testing.assert_allclose(again.score(va), p, rtol=1e-6)
    assert again.fingerprint == mlp.fingerprint
    again2, _ = fit_release(tr, va, TINY.model_copy(update={"model": "mlp"}), spec=shipped_spec())
    assert again2.fingerprint == mlp.fingerprint  # seeded: reruns give the same weights


@pytest.mark.unit
def test_decision_rule_and_device_resolution() -> None:
    np.testing.assert_array_equal(release_lib.decide(np.array([0.1, 0.5, 0.9]), 0.5), [0, 1, 1])
    assert release_lib.resolve_device("cpu") == "cpu"
    import torch

    if not torch.cuda.is_available():
        assert release_lib.resolve_device("auto") == "cpu"
        with pytest.raises(StageError, match="cuda"):
            release_lib.resolve_device("cuda")
