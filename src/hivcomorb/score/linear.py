"""All linear labels of a bundle in one matrix product, for scoring large extracts.

The pipeline of a logistic or lasso label is an optional signed log, median
imputation with missing indicators, standardisation and a logistic
regression. After the log, every step is affine in the imputed values, so
the log-odds of a label are

    z = c + sum_j w_j * x_j + sum_j b_j * [x_j is missing]

where ``x_j`` is the (logged) feature with missing values read as 0, ``w_j``
is the coefficient divided by the scale, ``b_j`` adds the imputed value's
term and the missing indicator's coefficient, and ``c`` gathers the intercept
and the centring. Stacking ``w`` and ``b`` of every label gives two matrix
products for all labels at once, over only the columns some label uses.
Calling each label's pipeline instead repeats the log, the imputation and
the scaling per label, which cost about 1.9 CPU s per label and 1,000,000
rows against 0.1 s for the product.

The result equals the pipelines' own ``predict_proba`` up to rounding: the
pipelines round the scaled features to float32, this module works in
float64. :class:`LinearLabels` compares the two on the first rows it scores
and returns to the pipelines if they differ by more than ``TOLERANCE``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from scipy.special import expit

from hivcomorb.scratch import Scratch

logger = logging.getLogger(__name__)

# Largest difference in probability accepted between this module and the pipelines.
TOLERANCE = 1e-6
# Rows compared with the pipelines on the first call.
CHECK_ROWS = 1000

_SCRATCH = Scratch()


@dataclass
class LinearTerms:
    """The log-odds of one label as weights on the features and on their missing flags.

    Attributes
    ----------
    log : bool
        Whether the features go through :func:`hivcomorb.models.signed_log` first.
    weights : ndarray of float64
        ``w_j`` per input feature.
    missing_weights : ndarray of float64
        ``b_j`` per input feature, added where the feature is missing.
    constant : float
        ``c``.
    calibrator : object or None
        The label's calibrator, applied to the probability as ``LabelModel`` does.
    """

    log: bool
    weights: np.ndarray
    missing_weights: np.ndarray
    constant: float
    calibrator: Any = None


def linear_terms(estimator: Any, n_features: int) -> LinearTerms | None:
    """Return the linear terms of a fitted label model, or None if it is not a pipeline this module can fold.

    Parameters
    ----------
    estimator : object
        A :class:`hivcomorb.models.LabelModel` whose estimator is a scikit-learn
        pipeline: optional ``FunctionTransformer(signed_log)``, optional
        ``SimpleImputer`` (missing values NaN), optional ``StandardScaler``, and a
        binary ``LogisticRegression``.
    n_features : int
        Columns of the feature matrix the pipeline reads.
    """
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    from hivcomorb.models import LabelModel, signed_log

    if type(estimator) is not LabelModel or not isinstance(estimator.estimator, Pipeline):
        return None
    *steps, (_, final) = estimator.estimator.steps
    if type(final) is not LogisticRegression or final.coef_.shape != (1, final.coef_.shape[1]) or len(final.classes_) != 2:
        return None
    log = False
    statistics = np.zeros(n_features)
    indicated = np.zeros(0, dtype=np.int64)
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    seen: list[type] = []
    for _, step in steps:
        kind = type(step)
        if kind in seen:
            return None
        seen.append(kind)
        if kind is FunctionTransformer and step.func is signed_log and not step.kw_args and not seen[:-1]:
            log = True
        elif kind is SimpleImputer and StandardScaler not in seen:
            missing = step.missing_values
            if not (isinstance(missing, float) and np.isnan(missing)) or np.isnan(step.statistics_).any():
                return None
            if len(step.statistics_) != n_features:
                return None
            statistics = np.asarray(step.statistics_, dtype=np.float64)
            if step.indicator_ is not None:
                indicated = np.asarray(step.indicator_.features_, dtype=np.int64)
        elif kind is StandardScaler:
            mean = None if step.mean_ is None else np.asarray(step.mean_, dtype=np.float64)
            scale = None if step.scale_ is None else np.asarray(step.scale_, dtype=np.float64)
        else:
            return None
    if SimpleImputer not in seen:
        # Without imputation a missing value reaches the regression as NaN, which it rejects.
        return None
    coef = np.asarray(final.coef_[0], dtype=np.float64)
    if coef.size != n_features + indicated.size:
        return None
    scaled = coef / scale if scale is not None else coef.copy()
    constant = float(final.intercept_[0]) - (float(scaled @ mean) if mean is not None else 0.0)
    weights = scaled[:n_features]
    missing_weights = weights * statistics
    np.add.at(missing_weights, indicated, scaled[n_features:])
    return LinearTerms(log, weights, missing_weights, constant, estimator.calibrator)


class LinearLabels:
    """Predicts the labels whose models fold into linear terms, all in one pass.

    Parameters
    ----------
    estimators : mapping of label to fitted label model
    n_features : int
        Columns of the feature matrix.

    Attributes
    ----------
    labels : list of str
        The labels predicted here; the others need their own estimator.
    """

    def __init__(self, estimators: Mapping[str, Any], n_features: int):
        terms = {label: linear_terms(estimator, n_features) for label, estimator in estimators.items()}
        self._groups: list[tuple[list[str], bool, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        for log in (False, True):
            group = [label for label, t in terms.items() if t is not None and t.log == log]
            if not group:
                continue
            weights = np.column_stack([terms[label].weights for label in group])
            missing = np.column_stack([terms[label].missing_weights for label in group])
            used = np.flatnonzero((weights != 0).any(axis=1) | (missing != 0).any(axis=1))
            constant = np.array([terms[label].constant for label in group])
            self._groups.append((group, log, used, weights[used], missing[used], constant))
        self.labels = [label for group in self._groups for label in group[0]]
        self._estimators = {label: estimators[label] for label in self.labels}
        self._calibrators = {label: terms[label].calibrator for label in self.labels}
        self._checked = False
        self._folded = True
        self._lock = threading.Lock()

    def predict(self, matrix: Any) -> dict[str, np.ndarray]:
        """Return the probability of each label in :attr:`labels` for a float32 feature matrix.

        On the first call, the first ``CHECK_ROWS`` rows are also scored by the
        labels' own estimators. If any probability differs by more than
        ``TOLERANCE``, a warning names the label, and this call and every later
        one use the estimators.
        """
        if not self.labels:
            return {}
        values = np.asarray(matrix, dtype=np.float32)
        with self._lock:
            if not self._checked:
                self._folded = self._agrees(values[:CHECK_ROWS])
                self._checked = True
        if not self._folded:
            return {label: _own_probability(estimator, values) for label, estimator in self._estimators.items()}
        return self._fold(values)

    def _fold(self, values: np.ndarray) -> dict[str, np.ndarray]:
        from hivcomorb.models import signed_log_in_place, zero_missing

        out: dict[str, np.ndarray] = {}
        n_rows = len(values)
        for group, log, used, weights, missing_weights, constant in self._groups:
            shape = (n_rows, len(used))
            block = np.take(values, used, axis=1, out=_SCRATCH.get("block", shape, np.float32))
            # Missing values read as 0, and their terms come from missing_weights instead.
            missing = zero_missing(block, _SCRATCH.get("missing", shape, bool))
            if log:
                # In float32, as the pipeline's FunctionTransformer computes it.
                signed_log_in_place(block, _SCRATCH.get("magnitude", shape, np.float32))
            wide = _SCRATCH.get("wide", shape, np.float64)
            np.copyto(wide, block)
            logits = wide @ weights
            np.copyto(wide, missing)
            logits += wide @ missing_weights
            logits += constant
            probabilities = expit(logits)
            for k, label in enumerate(group):
                p = np.ascontiguousarray(probabilities[:, k])
                calibrator = self._calibrators[label]
                if calibrator is not None:
                    p = np.clip(calibrator.predict(p), 0.0, 1.0)
                out[label] = p
        return out

    def _agrees(self, sample: np.ndarray) -> bool:
        """Return whether the folded terms give the estimators' probabilities on ``sample``, within ``TOLERANCE``."""
        for label, p in self._fold(sample).items():
            difference = float(np.max(np.abs(_own_probability(self._estimators[label], sample) - p), initial=0.0))
            if not difference <= TOLERANCE:
                logger.warning(
                    "The folded linear model of %s differs from its pipeline by %.2g in probability, so each label "
                    "is predicted by its own pipeline instead (slower). Report this with the hivcomorb and "
                    "scikit-learn versions",
                    label,
                    difference,
                )
                return False
        return True


def _own_probability(estimator: Any, values: np.ndarray) -> np.ndarray:
    return np.asarray(estimator.predict_proba(values)[:, 1], dtype=np.float64)
