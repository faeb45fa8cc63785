"""The model zoo and the per-label fitting used in cross-validation and for champions.

Every model is a set of binary classifiers, one per label, each trained only
on the patients whose label is known. For one label and one training set,
:func:`fit_label`:

1. computes inner out-of-fold probabilities for each candidate of the model's
   tuning grid on the inner folds, and keeps the candidate with the best
   inner score (AUROC by default);
2. fits the post-hoc calibrator (sigmoid or isotonic, if configured) on those
   inner out-of-fold probabilities;
3. chooses the decision threshold that maximises F1 on the calibrated inner
   out-of-fold probabilities;
4. refits the chosen candidate on the whole training set.

Only training rows reach steps 1 to 4, so an outer test fold never informs a
choice. Missing lab values are left as NaN for XGBoost and LightGBM, which
handle them natively. The other models impute (median plus missing-value
indicators) inside their pipeline, so imputation is fitted on training rows only.

A model with ``label_dependence`` adds a second stage. Its features are the
inputs plus the first stage's probabilities of the other labels: inner
out-of-fold probabilities on training rows, and the refitted first stage's
probabilities on new rows. It can so exploit correlation between comorbidities.
NOTE: the second stage's own inner folds reuse those first-stage features,
which were computed with the other inner folds' labels. This optimism stays
within the training rows and never reaches an outer test fold.
"""

from __future__ import annotations

import contextlib

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import SVC

from hivcomorb.device import xgboost_params
from hivcomorb.errors import ConfigError, ModelError
from hivcomorb.evaluate import best_f1_threshold, weighted_auroc, weighted_brier

logger = logging.getLogger(__name__)

KINDS = ("prevalence", "logistic", "random_forest", "knn", "svm", "mlp", "xgboost", "lightgbm")
BOOSTING_KINDS = ("xgboost", "lightgbm")
CALIBRATION_METHODS = ("none", "sigmoid", "isotonic")
TUNING_METRICS = ("auroc", "brier")
# Simplicity rank of each kind for the one-standard-error champion rule; lower
# is simpler to fit, check and explain. A stacked model ranks one above its base.
COMPLEXITY = {"prevalence": 0, "logistic": 1, "knn": 2, "svm": 2, "random_forest": 3, "mlp": 3, "xgboost": 3, "lightgbm": 3}


@dataclass(frozen=True)
class ModelSpec:
    """One configured model family of the zoo.

    ``params`` are the estimator's keyword arguments; each entry of ``grid``
    overrides some of them and is one tuning candidate. ``balance`` weights
    classes inversely to their frequency. ``log_features`` applies a signed
    logarithm to every input before imputation, for the models that are not
    tree ensembles (many labs are right-skewed). ``first_stage`` names the
    model whose per-label fits a ``label_dependence`` model stacks on.
    """

    name: str
    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)
    grid: tuple[Mapping[str, Any], ...] = ({},)
    balance: bool = True
    log_features: bool = False
    label_dependence: bool = False
    first_stage: str | None = None

    def candidates(self) -> list[dict[str, Any]]:
        """Return the full parameter set of each tuning candidate, in grid order."""
        return [{**self.params, **override} for override in self.grid]

    @property
    def complexity(self) -> int:
        """Simplicity rank used by the one-standard-error champion rule (see :data:`COMPLEXITY`)."""
        return COMPLEXITY[self.kind] + (1 if self.label_dependence else 0)


def model_specs(train_config: Mapping[str, Any]) -> list[ModelSpec]:
    """Read the models listed in ``train.models`` from ``train.zoo``.

    A zoo entry has ``kind`` (one of :data:`KINDS`), ``params``, an optional
    ``grid`` (list of overrides) and ``balance``. An entry with ``base: <name>``
    copies that entry; with ``label_dependence: true`` it becomes the
    second stage stacked on ``<name>``.

    Raises
    ------
    ConfigError
        If a listed model has no zoo entry or its entry is invalid.
    """
    zoo = train_config.get("zoo") or {}
    names = list(train_config.get("models") or [])
    if not names:
        raise ConfigError("train.models lists no models; name at least one entry of train.zoo in conf/stages/train.yaml")
    specs = []
    for name in names:
        specs.append(_spec_from_entry(str(name), zoo))
    return specs


def _spec_from_entry(name: str, zoo: Mapping[str, Any]) -> ModelSpec:
    if name not in zoo:
        raise ConfigError(f"train.models names {name!r}, which has no entry in train.zoo; known: {sorted(zoo)}")
    entry = dict(zoo[name] or {})
    first_stage = None
    if "base" in entry:
        base_name = str(entry.pop("base"))
        if base_name not in zoo or "base" in (zoo[base_name] or {}):
            raise ConfigError(f"train.zoo.{name}.base must name a zoo entry without its own base, got {base_name!r}")
        merged = copy.deepcopy(dict(zoo[base_name]))
        merged.update(entry)
        entry = merged
        first_stage = base_name
    kind = entry.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"train.zoo.{name}.kind must be one of {KINDS}, got {kind!r}")
    grid = entry.get("grid") or [{}]
    if not isinstance(grid, list) or not all(isinstance(g, Mapping) for g in grid):
        raise ConfigError(f"train.zoo.{name}.grid must be a list of parameter mappings, got {grid!r}")
    label_dependence = bool(entry.get("label_dependence", False))
    if label_dependence and first_stage is None:
        raise ConfigError(f"train.zoo.{name} sets label_dependence but no base model to stack on; add base: <model>")
    return ModelSpec(
        name=name,
        kind=str(kind),
        params=dict(entry.get("params") or {}),
        grid=tuple(dict(g) for g in grid),
        balance=bool(entry.get("balance", True)),
        log_features=bool(entry.get("log_features", False)),
        label_dependence=label_dependence,
        first_stage=first_stage if label_dependence else None,
    )


@dataclass(frozen=True)
class FitOptions:
    """Run-wide settings of :func:`fit_label`.

    ``tuning_seconds`` is the maximum time of the grid search of one label on
    one training set. The first candidate is always scored, and later ones
    are skipped once that time has passed.
    """

    device: str = "cpu"
    n_jobs: int = 1
    seed: int = 0
    calibration: str = "none"
    tuning_metric: str = "auroc"
    tuning_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.calibration not in CALIBRATION_METHODS:
            raise ConfigError(f"train.calibration must be one of {CALIBRATION_METHODS}, got {self.calibration!r}")
        if self.tuning_metric not in TUNING_METRICS:
            raise ConfigError(f"train.tuning.metric must be one of {TUNING_METRICS}, got {self.tuning_metric!r}")


# ---------------------------------------------------------------------------
# Estimators


def _imputer() -> SimpleImputer:
    return SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)


def signed_log(values: np.ndarray) -> np.ndarray:
    """Return ``sign(x) * log(1 + |x|)``, which keeps NaN, zero and the order of values."""
    return np.sign(values) * np.log1p(np.abs(values))


def zero_missing(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Set the NaN cells of ``values`` to 0 in place and return the mask of where they were.

    NumPy's log1p takes a slow path on NaN, so callers that replace missing
    values anyway fill them before :func:`signed_log_in_place`, whose result
    for 0 is 0. ``mask``, a boolean array of the same shape, receives the mask when given.
    """
    missing = np.isnan(values, out=mask)
    np.copyto(values, values.dtype.type(0), where=missing)
    return missing


def signed_log_in_place(values: np.ndarray, work: np.ndarray | None = None) -> np.ndarray:
    """Replace ``values`` (float, without NaN) by :func:`signed_log` of them, with one temporary array instead of three.

    The results are the same numbers: ``log1p(|x|)`` with the sign of ``x``
    copied, where ``signed_log`` multiplies by ``sign(x)``. ``work``, an
    array of the same shape and dtype, is used as the temporary when given.
    """
    magnitude = np.abs(values, out=work)
    np.log1p(magnitude, out=magnitude)
    return np.copysign(magnitude, values, out=values)


def _preprocessing(spec: ModelSpec, scale: bool) -> list[tuple[str, Any]]:
    """Return the pipeline steps before the estimator: optional signed log, imputation, optional scaling."""
    steps: list[tuple[str, Any]] = []
    if spec.log_features:
        steps.append(("log", FunctionTransformer(signed_log)))
    steps.append(("impute", _imputer()))
    if scale:
        steps.append(("scale", StandardScaler()))
    return steps


def make_estimator(spec: ModelSpec, params: Mapping[str, Any], positive_weight: float, options: FitOptions) -> Any:
    """Build an unfitted scikit-learn compatible binary classifier for ``spec``.

    ``positive_weight`` (negatives / positives in the training rows) is used
    only when ``spec.balance`` is true, by the estimators that accept it.
    """
    params = dict(params)
    balanced = "balanced" if spec.balance else None
    if spec.kind == "prevalence":
        return DummyClassifier(strategy="prior")
    if spec.kind == "logistic":
        model = LogisticRegression(class_weight=balanced, random_state=options.seed, **{"max_iter": 2000, **params})
        return Pipeline([*_preprocessing(spec, scale=True), ("model", model)])
    if spec.kind == "random_forest":
        weight = "balanced_subsample" if spec.balance else None
        model = RandomForestClassifier(class_weight=weight, n_jobs=options.n_jobs, random_state=options.seed, **params)
        return Pipeline([*_preprocessing(spec, scale=False), ("model", model)])
    if spec.kind == "knn":
        # k-nearest neighbours has no class weights; the tuned threshold corrects for imbalance.
        return Pipeline([*_preprocessing(spec, scale=True), ("model", KNeighborsClassifier(**params))])
    if spec.kind == "svm":
        # SVC(probability=True) is deprecated in scikit-learn 1.9. Sigmoid calibration on
        # internal folds gives Platt-scaled probabilities as it did.
        svm = SVC(class_weight=balanced, random_state=options.seed, **params)
        model = CalibratedClassifierCV(svm, method="sigmoid", cv=3, ensemble=False)
        return Pipeline([*_preprocessing(spec, scale=True), ("model", model)])
    if spec.kind == "mlp":
        # MLPClassifier takes class balance as sample weights at fit time (see _fit).
        model = MLPClassifier(random_state=options.seed, **params)
        return Pipeline([*_preprocessing(spec, scale=True), ("model", model)])
    if spec.kind == "xgboost":
        from xgboost import XGBClassifier

        device_params = xgboost_params(options.device)
        scale = positive_weight if spec.balance else 1.0
        return XGBClassifier(
            **device_params,
            n_jobs=options.n_jobs,
            random_state=options.seed,
            scale_pos_weight=scale,
            eval_metric="logloss",
            verbosity=0,
            **params,
        )
    if spec.kind == "lightgbm":
        from lightgbm import LGBMClassifier

        scale = positive_weight if spec.balance else 1.0
        return LGBMClassifier(n_jobs=options.n_jobs, random_state=options.seed, scale_pos_weight=scale, verbose=-1, **params)
    raise ConfigError(f"model kind {spec.kind!r} is invalid; expected one of {KINDS}")


def xgboost_estimator(config: Mapping[str, Any], device: str = "cpu", positive_weight: float = 1.0) -> Any:
    """Build the unfitted XGBoost classifier of ``train.zoo.xgboost`` (first grid candidate).

    Used by the benchmarks to time the same model that training fits.
    """
    train_config = config.get("train") or {}
    spec = _spec_from_entry("xgboost", train_config.get("zoo") or {})
    threads = train_config.get("threads_per_model", "auto")
    options = FitOptions(device=device, n_jobs=-1 if threads == "auto" else int(threads), seed=int(config.get("seed", 0)))
    return make_estimator(spec, spec.candidates()[0], positive_weight, options)


# Dask client that XGBoost fits go to while training runs with train.backend: dask.
_dask_client: Any = None


@contextlib.contextmanager
def dask_backend(client: Any) -> Iterator[None]:
    """Send every XGBoost fit in the block to ``client`` (a ``dask.distributed.Client``)."""
    global _dask_client
    previous, _dask_client = _dask_client, client
    try:
        yield
    finally:
        _dask_client = previous


def _fit(spec: ModelSpec, params: Mapping[str, Any], features: np.ndarray, target: np.ndarray, options: FitOptions) -> Any:
    """Fit one binary estimator, or a constant model when the training set has one class."""
    positives = int(target.sum())
    negatives = int(target.size - positives)
    if positives == 0 or negatives == 0:
        return ConstantModel(float(positives > 0))
    estimator = make_estimator(spec, params, negatives / positives, options)
    if spec.kind == "xgboost" and _dask_client is not None:
        from hivcomorb.distributed import fit_xgboost_dask

        xgb_params = {k: v for k, v in estimator.get_params().items() if v is not None and k != "n_jobs"}
        return fit_xgboost_dask(_dask_client, pd.DataFrame(features), target, xgb_params)
    if spec.kind == "mlp" and spec.balance:
        weights = np.where(target == 1, target.size / (2.0 * positives), target.size / (2.0 * negatives))
        estimator.fit(features, target, model__sample_weight=weights)
    else:
        estimator.fit(features, target)
    return estimator


def _positive_proba(estimator: Any, features: np.ndarray) -> np.ndarray:
    return np.asarray(estimator.predict_proba(features)[:, 1], dtype=np.float64)


class ConstantModel:
    """A classifier that predicts one fixed probability, for training sets with one class."""

    def __init__(self, probability: float):
        self.probability = float(probability)

    def predict_proba(self, features: Any) -> np.ndarray:
        """Return the fixed probability for every row."""
        n_rows = np.asarray(features).shape[0]
        return np.column_stack([np.full(n_rows, 1 - self.probability), np.full(n_rows, self.probability)])


class SigmoidCalibrator:
    """Platt scaling: a logistic regression on the logit of the raw probability."""

    def fit(self, probability: np.ndarray, target: np.ndarray) -> "SigmoidCalibrator":
        """Fit the map from raw probabilities to calibrated ones."""
        self.model_ = LogisticRegression(C=1e6, max_iter=1000).fit(_logit(probability)[:, None], target)
        return self

    def predict(self, probability: np.ndarray) -> np.ndarray:
        """Return calibrated probabilities."""
        return self.model_.predict_proba(_logit(probability)[:, None])[:, 1]


def _logit(probability: np.ndarray) -> np.ndarray:
    clipped = np.clip(np.asarray(probability, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(clipped / (1 - clipped))


def make_calibrator(method: str) -> Any:
    """Return an unfitted calibrator with ``fit(p, y)`` and ``predict(p)``, or None for ``"none"``."""
    if method == "none":
        return None
    if method == "sigmoid":
        return SigmoidCalibrator()
    if method == "isotonic":
        return IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    raise ConfigError(f"calibration method {method!r} is invalid; expected one of {CALIBRATION_METHODS}")


class LabelModel(BaseEstimator):
    """The fitted classifier of one label: an estimator and an optional calibrator.

    ``predict_proba`` accepts a feature matrix (array or DataFrame, in the
    training column order) and returns the two-column probability array that
    scikit-learn classifiers return, so a :class:`~hivcomorb.bundle.ModelBundle`
    can call it like any estimator. Deriving from ``BaseEstimator`` exposes the
    wrapped estimator's parameters as ``estimator__<name>``, which is how a
    bundle resets ``device`` to the CPU before saving.
    """

    def __init__(self, estimator: Any = None, calibrator: Any = None):
        self.estimator = estimator
        self.calibrator = calibrator

    def uncalibrated_probability(self, features: Any) -> np.ndarray:
        """Return the estimator's positive-class probability before calibration."""
        return _positive_proba(self.estimator, np.asarray(features, dtype=np.float32))

    def predict_proba(self, features: Any) -> np.ndarray:
        """Return ``[P(y=0), P(y=1)]`` for each row."""
        probability = self.uncalibrated_probability(features)
        if self.calibrator is not None:
            probability = np.clip(self.calibrator.predict(probability), 0.0, 1.0)
        return np.column_stack([1 - probability, probability])


class StackedLabelModel:
    """Second-stage classifier of one label that also reads the other labels' first-stage probabilities."""

    def __init__(self, first_stage: Mapping[str, LabelModel], other_labels: Sequence[str], second_stage: LabelModel):
        self.first_stage = dict(first_stage)
        self.other_labels = list(other_labels)
        self.second_stage = second_stage

    def predict_proba(self, features: Any) -> np.ndarray:
        """Return ``[P(y=0), P(y=1)]`` for each row."""
        matrix = np.asarray(features, dtype=np.float32)
        return self.second_stage.predict_proba(stack_features(matrix, self.first_stage, self.other_labels))

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Return the nested parameters of both stages, as ``first_stage__<label>__...`` and ``second_stage__...``."""
        params: dict[str, Any] = {"second_stage": self.second_stage}
        if deep:
            params.update({f"second_stage__{k}": v for k, v in self.second_stage.get_params(deep=True).items()})
            for label, model in self.first_stage.items():
                params.update({f"first_stage__{label}__{k}": v for k, v in model.get_params(deep=True).items()})
        return params

    def set_params(self, **params: Any) -> "StackedLabelModel":
        """Set nested parameters named as in :meth:`get_params`."""
        for key, value in params.items():
            if key.startswith("second_stage__"):
                self.second_stage.set_params(**{key[len("second_stage__") :]: value})
            elif key.startswith("first_stage__"):
                label, _, rest = key[len("first_stage__") :].partition("__")
                self.first_stage[label].set_params(**{rest: value})
            else:
                raise ValueError(f"invalid parameter {key!r} for StackedLabelModel")
        return self


def stack_features(matrix: np.ndarray, first_stage: Mapping[str, Any], other_labels: Sequence[str]) -> np.ndarray:
    """Append the first stage's probability of each of ``other_labels`` to ``matrix``.

    The probabilities are taken before calibration, as the second stage was
    trained on the first stage's uncalibrated inner out-of-fold probabilities.
    """
    extra = [_first_stage_probability(first_stage[label], matrix) for label in other_labels]
    if not extra:
        return matrix
    return np.column_stack([matrix, np.column_stack(extra).astype(np.float32)])


def _first_stage_probability(model: Any, matrix: np.ndarray) -> np.ndarray:
    if isinstance(model, LabelModel):
        return model.uncalibrated_probability(matrix)
    return model.predict_proba(matrix)[:, 1]


# ---------------------------------------------------------------------------
# Fitting one label


@dataclass
class LabelFit:
    """The outcome of :func:`fit_label` for one label and one training set.

    ``inner_probability`` is the chosen candidate's inner out-of-fold
    probability (before calibration) for every training row, including rows
    whose label is unknown; a second stage reads it as a feature.
    """

    model: LabelModel
    threshold: float
    params: dict[str, Any]
    inner_score: float
    inner_probability: np.ndarray
    n_train: int
    n_positive: int
    candidates_scored: int
    tuning_truncated: bool


def fit_label(
    features: np.ndarray,
    target: np.ndarray,
    inner_splits: Sequence[tuple[np.ndarray, np.ndarray]],
    spec: ModelSpec,
    options: FitOptions,
) -> LabelFit:
    """Tune, calibrate, choose the threshold of, and fit one label's classifier.

    Parameters
    ----------
    features : array of shape (n, n_features)
        Training rows only.
    target : array of shape (n,)
        1, 0 or NaN (unknown); rows with NaN are left out of every fit and score.
    inner_splits : sequence of (fit positions, validation positions)
        Inner folds over the rows of ``features``.
    spec : ModelSpec
    options : FitOptions

    Returns
    -------
    LabelFit
    """
    known = np.isfinite(target)
    labels = np.where(known, target, 0.0)
    started = time.perf_counter()
    best: tuple[float, int, np.ndarray] | None = None
    candidates = spec.candidates()
    scored = 0
    for index, params in enumerate(candidates):
        if scored > 0 and time.perf_counter() - started > options.tuning_seconds:
            break
        inner = _inner_probability(features, labels, known, inner_splits, spec, params, options)
        score = _tuning_score(labels[known], inner[known], options.tuning_metric)
        scored += 1
        if best is None or score > best[0]:
            best = (score, index, inner)
    assert best is not None
    score, index, inner = best
    params = candidates[index]

    calibrator = make_calibrator(options.calibration)
    calibrated_inner = inner
    if calibrator is not None and 0 < labels[known].sum() < known.sum():
        calibrator.fit(inner[known], labels[known])
        calibrated_inner = np.clip(calibrator.predict(inner), 0.0, 1.0)
    elif calibrator is not None:
        calibrator = None
    threshold = best_f1_threshold(labels[known], calibrated_inner[known])

    estimator = _fit(spec, params, features[known], labels[known], options)
    return LabelFit(
        model=LabelModel(estimator, calibrator),
        threshold=threshold,
        params=dict(params),
        inner_score=float(score),
        inner_probability=inner,
        n_train=int(known.sum()),
        n_positive=int(labels[known].sum()),
        candidates_scored=scored,
        tuning_truncated=scored < len(candidates),
    )


def _inner_probability(
    features: np.ndarray,
    labels: np.ndarray,
    known: np.ndarray,
    inner_splits: Sequence[tuple[np.ndarray, np.ndarray]],
    spec: ModelSpec,
    params: Mapping[str, Any],
    options: FitOptions,
) -> np.ndarray:
    """Return inner out-of-fold probabilities for every row, fitting on known labels only."""
    probability = np.full(features.shape[0], np.nan)
    for fit_rows, validation_rows in inner_splits:
        fit_rows = fit_rows[known[fit_rows]]
        estimator = _fit(spec, params, features[fit_rows], labels[fit_rows], options)
        probability[validation_rows] = _positive_proba(estimator, features[validation_rows])
    if np.isnan(probability).any():
        raise ModelError("inner folds do not cover every training row; each row must be in exactly one inner fold")
    return probability


def _tuning_score(target: np.ndarray, probability: np.ndarray, metric: str) -> float:
    """Return the inner score to maximise (AUROC, or the negated Brier score)."""
    weights = np.ones((1, target.size))
    if metric == "auroc":
        value = float(weighted_auroc(target, probability, weights)[0])
    else:
        value = -float(weighted_brier(target, probability, weights)[0])
    return value if np.isfinite(value) else -np.inf
