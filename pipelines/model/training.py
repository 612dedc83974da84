"""Fitting a release: feature selection, preprocessor + model (XGBoost or a PyTorch MLP), logit calibration.

Pure: frames and typed params in, a `Release` out; no I/O. The train stage wires it to files and MLflow.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pandas as pd

from pipelines.contract import LABEL
from pipelines.errors import StageError
from pipelines.model.release import Release, build_mlp, model_margin
from pipelines.model.request_features import FeatureSpec
from pipelines.model.transform import build_preprocessor
from pipelines.sections import MLPParams, TrainParams, XGBoostParams


def select_features(train: pd.DataFrame, spec: FeatureSpec) -> tuple[list[str], list[str]]:
    """Model features computable from `train`, minus those entirely null there; returns (kept, dropped).

    A user's log without merchants gives an all-null distinct_merchants_24h: imputing it would fake a
    constant feature, so it is dropped and the release's feature list records what the model uses.
    """
    feats = spec.frame(train)
    dropped = [c for c in feats.columns if feats[c].isna().all()]
    kept = [c for c in feats.columns if c not in dropped]
    if not kept:
        raise StageError("train: no usable feature (every feature column is entirely null in train)")
    return kept, dropped


def _labels(frame: pd.DataFrame, split: str) -> np.ndarray:
    if LABEL not in frame.columns:
        raise StageError(f"train: {split} split has no {LABEL!r} column")
    y = frame[LABEL]
    if y.isna().any():
        raise StageError(f"train: {split} split has {int(y.isna().sum())} null label(s)")
    y = y.to_numpy(dtype=np.int64)
    bad = set(np.unique(y)) - {0, 1}
    if bad:
        raise StageError(f"train: {split} labels must be 0/1, found {sorted(bad)}")
    return y


def seed_everything(seed: int) -> None:
    """Seed python, numpy and (when imported) torch so a rerun trains the same model."""
    random.seed(seed)
    np.random.seed(seed)


def fit_xgboost(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    cfg: XGBoostParams,
    seed: int,
    device: str,
) -> tuple[Any, float, dict[str, Any]]:
    """Gradient-boosted trees (hist) with class reweighting and early stopping on valid PR-AUC.

    Returns (booster cut at the best iteration, pos weight used, info).
    """
    import xgboost as xgb

    pos = int(y_train.sum())
    weight = (len(y_train) - pos) / pos
    booster_params = {
        "objective": "binary:logistic",
        "tree_method": "hist",
        "device": device,
        "max_depth": cfg.max_depth,
        "learning_rate": cfg.learning_rate,
        "subsample": cfg.subsample,
        "colsample_bytree": cfg.colsample_bytree,
        "min_child_weight": cfg.min_child_weight,
        "scale_pos_weight": weight,
        "eval_metric": ["logloss", "aucpr"],  # the last one drives early stopping
        "seed": seed,
    }
    dtrain = xgb.QuantileDMatrix(x_train, label=y_train)
    # early stopping needs both classes in valid, else PR-AUC is undefined
    early = len(np.unique(y_valid)) == 2
    evals = [(xgb.QuantileDMatrix(x_valid, label=y_valid, ref=dtrain), "valid")] if early else []
    booster = xgb.train(
        booster_params,
        dtrain,
        num_boost_round=cfg.n_estimators,
        evals=evals,
        early_stopping_rounds=cfg.early_stopping_rounds if early else None,
        verbose_eval=False,
    )
    best = booster.best_iteration if early else cfg.n_estimators - 1
    booster = booster[: best + 1]
    # a release scores numpy input on CPU unless told otherwise at load
    booster.set_param({"device": "cpu"})
    return booster, weight, {"best_iteration": int(best), "n_trees": int(best + 1), "early_stopping": early}


def fit_mlp(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    cfg: MLPParams,
    seed: int,
    device: str,
) -> tuple[Any, float, dict[str, Any]]:
    """Tabular MLP with BCE + pos_weight (Adam); keeps the epoch with the lowest valid loss.

    Returns (module on CPU in eval mode, pos weight used, info).
    """
    import torch

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    pos = int(y_train.sum())
    weight = (len(y_train) - pos) / pos
    module = build_mlp(x_train.shape[1], list(cfg.hidden), cfg.dropout).to(device)
    opt = torch.optim.Adam(module.parameters(), lr=cfg.learning_rate)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([weight], device=device))
    xt = torch.from_numpy(x_train).to(device)
    yt = torch.from_numpy(y_train.astype(np.float32)).to(device)
    xv = torch.from_numpy(x_valid).to(device)
    yv = torch.from_numpy(y_valid.astype(np.float32)).to(device)
    best_loss, best_epoch, best_state = math.inf, -1, None
    for epoch in range(cfg.epochs):
        module.train()
        perm = torch.randperm(len(xt), generator=gen).to(device)
        for i in range(0, len(xt), cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            opt.zero_grad()
            loss = loss_fn(module(xt[idx]).squeeze(1), yt[idx])
            loss.backward()
            opt.step()
        module.eval()
        with torch.inference_mode():
            valid_loss = float(loss_fn(module(xv).squeeze(1), yv)) if len(xv) else 0.0
        if valid_loss < best_loss:
            best_loss, best_epoch = valid_loss, epoch
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    assert best_state is not None
    module.load_state_dict(best_state)
    module = module.cpu().eval()
    return module, weight, {"best_epoch": best_epoch, "best_valid_loss": best_loss}


def fit_logit_offset(margin: np.ndarray, y: np.ndarray, init: float, iterations: int = 50) -> float:
    """Intercept b minimising valid log loss of sigmoid(margin + b) (Newton steps from `init`).

    Training reweights positives (scale_pos_weight / pos_weight) which inflates the logits; -log(w) undoes
    that exactly only at the optimum, and early stopping leaves the model short of it. Refitting the one
    intercept on valid restores calibrated probabilities without touching the ranking (so AUCs and the
    threshold's recall are unchanged). Falls back to `init` when valid has a single class.
    """
    if len(np.unique(y)) < 2:
        return float(init)
    b = float(init)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(margin + b)))
        grad, hess = float(np.sum(p - y)), float(np.sum(p * (1 - p)))
        if hess <= 1e-12:
            break
        step = grad / hess
        b -= float(np.clip(step, -2.0, 2.0))
        if abs(step) < 1e-10:
            break
    return b


def fit_release(
    train: pd.DataFrame, valid: pd.DataFrame, cfg: TrainParams, spec: FeatureSpec, device: str = "cpu"
) -> tuple[Release, dict[str, Any]]:
    """Fit preprocessor (train only) and model on `spec`'s features; returns the release and facts."""
    y_train, y_valid = _labels(train, "train"), _labels(valid, "valid")
    classes = np.unique(y_train)
    if len(classes) < 2:
        raise StageError(
            f"train: the train split has a single class (label {int(classes[0]) if len(classes) else 'none'} "
            f"only, {len(y_train)} rows); cannot fit a classifier"
        )
    seed_everything(cfg.seed)
    feature_list, dropped = select_features(train, spec)
    preprocessor = build_preprocessor(feature_list, spec.categorical)
    x_train = np.ascontiguousarray(preprocessor.fit_transform(spec.frame(train)[feature_list]), np.float32)
    x_valid = np.ascontiguousarray(preprocessor.transform(spec.frame(valid)[feature_list]), np.float32)
    if cfg.model == "xgboost":
        model, weight, info = fit_xgboost(x_train, y_train, x_valid, y_valid, cfg.xgboost, cfg.seed, device)
        arch = None
    else:
        model, weight, info = fit_mlp(x_train, y_train, x_valid, y_valid, cfg.mlp, cfg.seed, device)
        arch = {"n_inputs": int(x_train.shape[1]), "hidden": list(cfg.mlp.hidden), "dropout": cfg.mlp.dropout}
    offset = fit_logit_offset(model_margin(cfg.model, model, x_valid), y_valid, -math.log(weight))
    release = Release(
        feature_list=feature_list,
        model_kind=cfg.model,
        preprocessor=preprocessor,
        model=model,
        spec=spec,
        logit_offset=offset,
        mlp_arch=arch,
    )
    facts = {
        **info,
        "dropped_features": dropped,
        "pos_weight": weight,
        "logit_offset": offset,
        "n_train": len(train),
        "n_valid": len(valid),
        "train_positives": int(y_train.sum()),
        "valid_positives": int(y_valid.sum()),
        "n_model_inputs": int(x_train.shape[1]),
    }
    return release, facts
