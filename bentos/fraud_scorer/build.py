"""`make bento`: build the fraud_scorer Bento around the registry's current champion.

1. resolve `champion` of params.register.model_name in the MLflow registry (params.tracking_uri);
2. import that version into the BentoML model store (`bentoml.mlflow.import_model`), labelled with its
   name, version, fingerprint and threshold;
3. write bundled_release.json (which BentoML model the service falls back to when the registry cannot be
   reached at start-up) and build the Bento from bentofile.yaml, labels recording the model version.

Usage: python bentos/fraud_scorer/build.py [--params params.yaml]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=None, help="params.yaml (default: $SLUICE_PARAMS or the repo's)")
    args = parser.parse_args(argv)

    import bentoml

    from pipelines.contract import CHAMPION
    from pipelines.engines.registry import open_registry, use_tracking_uri, version_uri
    from pipelines.serving import serving_params

    params = serving_params(args.params)
    name = params.register_.model_name
    mv = open_registry(params).get_version_by_alias(name, CHAMPION)
    if mv is None:
        print(
            f"registered model {name!r} has no {CHAMPION!r} in {params.tracking_uri}: run the pipeline first"
        )
        return 1
    version, tags = str(mv.version), dict(mv.tags)
    use_tracking_uri(params.tracking_uri)
    labels = {
        "model_name": name,
        "model_version": version,
        "alias": CHAMPION,
        "fingerprint": tags.get("fingerprint", ""),
        "threshold": tags.get("threshold", ""),
    }
    model = bentoml.mlflow.import_model(name, version_uri(name, version), labels=labels)
    bundled = {**labels, "bento_model": str(model.tag)}
    (HERE / "bundled_release.json").write_text(json.dumps(bundled, indent=2) + "\n")

    cfg = yaml.safe_load((HERE / "bentofile.yaml").read_text())
    bento = bentoml.bentos.build(
        service=cfg["service"],
        description=cfg.get("description"),
        labels={**cfg.get("labels", {}), **labels},
        include=cfg.get("include"),
        exclude=cfg.get("exclude"),
        python=cfg.get("python"),
        models=[str(model.tag)],
        build_ctx=str(REPO),
    )
    print(json.dumps({"bento": str(bento.tag), "model": str(model.tag), **labels}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
