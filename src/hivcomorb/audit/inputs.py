"""Read what ingestion and training wrote, in the form the audit needs."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from hivcomorb.audit.fairness import SettingPredictions
from hivcomorb.bundle import ModelBundle
from hivcomorb.context import RunContext
from hivcomorb.errors import DataNotFoundError, ModelError

logger = logging.getLogger(__name__)


def _require(path: Path, producer: str) -> Path:
    if not path.is_file():
        raise DataNotFoundError(f"{path} not found; run 'hivcomorb {producer}' for this dataset before the audit")
    return path


def load_cohort(ctx: RunContext) -> pd.DataFrame:
    """Read the canonical cohort written by ingestion, with a 0-based index of cohort rows."""
    cohort = pd.read_parquet(_require(ctx.artifacts / "ingest" / "cohort.parquet", "ingest"))
    return cohort.reset_index(drop=True)


def load_champions(ctx: RunContext) -> dict[str, str]:
    """Return the champion model name of each setting from ``train/train.json``."""
    path = _require(ctx.artifacts / "train" / "train.json", "train")
    try:
        champions = json.loads(path.read_text(encoding="utf-8"))["champions"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ModelError(f"{path} has no 'champions' mapping of setting to model; rerun 'hivcomorb train'") from exc
    return {str(k): str(v) for k, v in champions.items()}


def setting_predictions(
    oof: pd.DataFrame,
    champions: dict[str, str],
    n_rows: int,
    labels: Sequence[str],
    repeat: int,
) -> dict[str, SettingPredictions]:
    """Align each champion's out-of-fold probabilities and thresholds to cohort rows.

    Labels without a ``p_<label>`` column in the predictions are left out.
    A row predicted twice in the same repeat is an error of the training output.
    """
    out: dict[str, SettingPredictions] = {}
    for setting, model in champions.items():
        part = oof[(oof["setting"] == setting) & (oof["model"] == model) & (oof["repeat"] == repeat)]
        if part.empty:
            logger.warning("No out-of-fold predictions for the %s champion (%s), repeat %d", setting, model, repeat)
            continue
        rows = part["row"].to_numpy(dtype=np.int64)
        if np.unique(rows).size != rows.size:
            raise ModelError(f"out-of-fold predictions of {setting}/{model} repeat {repeat} list a cohort row twice")
        if rows.min() < 0 or rows.max() >= n_rows:
            raise ModelError(f"out-of-fold predictions of {setting}/{model} refer to rows outside the cohort of {n_rows}")
        scores, thresholds, decisions = {}, {}, {}
        for label in labels:
            if f"p_{label}" not in part.columns or f"t_{label}" not in part.columns:
                continue
            score = np.full(n_rows, np.nan)
            threshold = np.full(n_rows, np.nan)
            score[rows] = part[f"p_{label}"].to_numpy(dtype=np.float64)
            threshold[rows] = part[f"t_{label}"].to_numpy(dtype=np.float64)
            with np.errstate(invalid="ignore"):
                decision = np.where(np.isfinite(score) & np.isfinite(threshold), (score >= threshold).astype(np.float64), np.nan)
            scores[label], thresholds[label], decisions[label] = score, threshold, decision
        out[setting] = SettingPredictions(setting=setting, model=model, scores=scores, thresholds=thresholds, decisions=decisions)
    return out


def load_predictions(ctx: RunContext, n_rows: int, labels: Sequence[str], repeat: int) -> dict[str, SettingPredictions]:
    """Read ``train/oof.parquet`` and return each setting champion's aligned predictions."""
    champions = load_champions(ctx)
    oof = pd.read_parquet(_require(ctx.artifacts / "train" / "oof.parquet", "train"))
    return setting_predictions(oof, champions, n_rows, labels, repeat)


def load_bundle(ctx: RunContext, setting: str) -> ModelBundle | None:
    """Read the champion bundle of ``setting``, or return None (logged) when training wrote none."""
    path = ctx.artifacts / "train" / "models" / f"{setting}.joblib"
    if not path.is_file():
        logger.warning("No %s model bundle at %s; its explanation audit is skipped", setting, path)
        return None
    return ModelBundle.load(path)


def read_audit(ctx: RunContext) -> dict[str, Any] | None:
    """Return the audit's JSON output, or None before the audit has run."""
    path = ctx.artifacts / "audit" / "audit.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
