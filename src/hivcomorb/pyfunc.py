"""The MLflow pyfunc wrapper of a hivcomorb model.

A registered hivcomorb model is an MLflow ``python_function`` model, so it
loads with :func:`mlflow.pyfunc.load_model`, serves with ``mlflow models
serve`` and runs on Spark through :func:`mlflow.pyfunc.spark_udf`. Its input is
a canonical frame (contract column names and canonical units, as ingestion
writes them). Its output has one probability column ``p_<label>`` per label.

The logged model keeps three artifacts:

``bundle``
    The :class:`~hivcomorb.bundle.ModelBundle` joblib file saved by training.
``contract``
    The data contract the model was trained on, site categories included, as
    YAML, so the feature encoding does not depend on the scoring machine's
    checkout.
``ood_detector`` (optional)
    An :class:`OutOfDistributionDetector` fitted on the training cohort.

The scorer (:mod:`hivcomorb.score`) reads all three through
:meth:`HivcomorbModel.bundle`, :meth:`HivcomorbModel.contract` and
:meth:`HivcomorbModel.ood_detector` after
``mlflow.pyfunc.load_model(uri).unwrap_python_model()``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import mlflow.pyfunc
import numpy as np
import pandas as pd
import yaml

from hivcomorb.bundle import ModelBundle
from hivcomorb.contract import Contract, load_contract
from hivcomorb.errors import ModelError
from hivcomorb.files import write_text_atomic

logger = logging.getLogger(__name__)

PROBABILITY_PREFIX = "p_"

# Artifact keys of the logged model.
BUNDLE_ARTIFACT = "bundle"
CONTRACT_ARTIFACT = "contract"
OOD_ARTIFACT = "ood_detector"

# Smallest batch in which an input column with no value is logged as a likely
# caller mistake. A few rows may lack a rarely measured lab by chance.
EMPTY_COLUMN_MIN_ROWS = 50

# Maximum number of row numbers listed per column in an invalid-input error.
MAX_ROWS_IN_MESSAGE = 5

# Distributions the pickled bundle and detector need when the model is loaded
# in a fresh environment (``mlflow models serve``, a Spark executor).
RUNTIME_DISTRIBUTIONS = ("mlflow", "numpy", "pandas", "scikit-learn", "xgboost", "lightgbm", "joblib", "pyyaml")


def probability_column(label: str) -> str:
    """Return the output column of ``label``'s probability, e.g. ``p_diabetes``."""
    return f"{PROBABILITY_PREFIX}{label}"


def contract_to_yaml(contract: Contract) -> str:
    """Serialise a contract, site adaptations included, in the format of ``data_schema/contract.yaml``."""
    columns = []
    for col in contract.columns:
        entry: dict[str, Any] = {"name": col.name, "role": col.role, "dtype": col.dtype}
        if col.unit is not None:
            entry["unit"] = col.unit
        if col.categories:
            entry["categories"] = list(col.categories)
        if col.possible is not None:
            entry["possible"] = list(col.possible)
        if col.usual is not None:
            entry["usual"] = list(col.usual)
        if col.alt_units:
            entry["alt_units"] = {
                unit: {"add": conv.add, "multiply": conv.multiply, "divide": conv.divide, "transform": conv.transform}
                if conv.transform
                else {"add": conv.add, "multiply": conv.multiply, "divide": conv.divide}
                for unit, conv in col.alt_units.items()
            }
        if col.detection_limit is not None:
            entry["detection_limit"] = col.detection_limit
        if col.note:
            entry["note"] = col.note
        columns.append(entry)
    document = {"version": contract.version, "id_column": contract.id_column, "columns": columns}
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def write_contract(contract: Contract, path: str | Path) -> Path:
    """Write :func:`contract_to_yaml` output to ``path`` atomically."""
    return write_text_atomic(path, contract_to_yaml(contract))


def _listed_rows(invalid: np.ndarray) -> str:
    """Return the 1-based numbers of the rows marked in ``invalid``, at most :data:`MAX_ROWS_IN_MESSAGE` of them."""
    rows = (np.flatnonzero(invalid) + 1).tolist()
    listed = ", ".join(str(r) for r in rows[:MAX_ROWS_IN_MESSAGE])
    if len(rows) > MAX_ROWS_IN_MESSAGE:
        listed += f" and {len(rows) - MAX_ROWS_IN_MESSAGE} more"
    return listed


def check_columns(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    """Raise :class:`~hivcomorb.errors.ModelError` when ``frame`` lacks any of ``columns``.

    The message names the missing columns and never a value of the frame.
    """
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        raise ModelError(
            f"missing input column(s) {', '.join(repr(name) for name in missing)}. Send every column that the "
            "model signature lists (mlflow.models.get_model_info(uri).signature), with null cells for missing values"
        )


def _not_numbers(series: pd.Series, numbers: pd.Series) -> np.ndarray:
    """Return a mask of the cells of ``series`` that contain a value which did not convert to a number in ``numbers``.

    Booleans count as invalid although pandas converts them to 0 and 1.
    """
    if pd.api.types.is_bool_dtype(series.dtype):
        return series.notna().to_numpy()
    invalid = series.notna() & numbers.isna()
    if series.dtype == object:
        invalid |= series.map(lambda value: isinstance(value, (bool, np.bool_)))
    return invalid.to_numpy(dtype=bool)


def canonical_input(frame: pd.DataFrame, contract: Contract, columns: Sequence[str]) -> pd.DataFrame:
    """Return ``columns`` of ``frame`` with the types the model's features expect.

    Category columns become strings with ``None`` for missing values. Numeric
    and integer columns become float64 with NaN for missing values. They
    accept numbers of any numeric dtype, nullable ones included, and text
    that parses as a number.

    Raises
    ------
    ModelError
        When a numeric column contains a value that is not a number (text
        such as ``<20``, or a boolean). The message names the columns and
        input row numbers (row 1 is the first row) but not the values.
    """
    out = {}
    problems = []
    for name in columns:
        col = contract.column(name)
        series = frame[name]
        if col.dtype == "category":
            out[name] = series.astype(object).where(series.notna(), None)
            continue
        numbers = pd.to_numeric(series, errors="coerce")
        invalid = _not_numbers(series, numbers)
        if invalid.any():
            unit = f" in {col.unit}" if col.unit else ""
            problems.append(f"{name!r} in row(s) {_listed_rows(invalid)} (expected a number{unit})")
            continue
        out[name] = numbers.astype("float64")
    if problems:
        raise ModelError(
            "values that are not numbers in column " + "; column ".join(problems) + ". Send numbers in the "
            "contract's canonical units and null for a missing value, or score the raw extract with "
            "'hivcomorb score', which parses it as ingestion does (censored results such as <20 included)"
        )
    return pd.DataFrame(out, index=frame.index)


def check_categories(frame: pd.DataFrame, contract: Contract, columns: Sequence[str]) -> None:
    """Raise :class:`~hivcomorb.errors.ModelError` when a category column contains a value outside the contract.

    The feature matrix has one indicator per contract category, so a site
    code such as ``F`` would otherwise be encoded as no category at all and
    scored without a warning. Missing values are allowed and count as
    ``unknown``. The message names the columns and input row numbers (row 1 is
    the first row) but not the values, because a caller may send anything in
    them.
    """
    problems = []
    for name in columns:
        col = contract.column(name)
        if col.dtype != "category":
            continue
        series = frame[name]
        invalid = (series.notna() & ~series.astype(object).isin(col.categories)).to_numpy(dtype=bool)
        if not invalid.any():
            continue
        problems.append(f"{name!r} in row(s) {_listed_rows(invalid)} (allowed: {', '.join(col.categories)})")
    if problems:
        raise ModelError(
            "invalid category values in column " + "; column ".join(problems) + ". Recode site values to the "
            "contract's categories before scoring, as the recodes of a mapping file do for 'hivcomorb ingest'"
        )


def signature_for(bundle: ModelBundle):
    """Return the MLflow signature: the bundle's input columns in, ``p_<label>`` doubles out.

    Every input column is optional and of MLflow's ``Any`` type. When MLflow
    3.17.2 rejects an input against the signature, it puts the text of the
    whole input frame into the error, in process and in the scoring server's
    response, so any patient_id column sent along would come back. With this
    signature MLflow only drops the columns it does not list, and
    :meth:`HivcomorbModel.predict` checks names and types instead.

    The untyped signature has two costs in MLflow 3.17.2: the scoring server
    rejects ``text/csv`` requests, because it reads CSV with one pandas type
    per column, and ``spark_udf`` must be called with the column names.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import AnyType

    inputs = [ColSpec(AnyType(), name, required=False) for name in bundle.input_columns]
    outputs = [ColSpec("double", probability_column(label)) for label in bundle.labels]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def synthetic_input_example(bundle: ModelBundle, contract: Contract, n_rows: int = 2) -> pd.DataFrame:
    """Build an input example from the contract alone, with no patient row in it.

    Numeric columns take evenly spaced values inside the training range, or
    inside the contract's usual range when the bundle has none. Category
    columns cycle through the contract's categories.
    """
    rows: dict[str, list[Any]] = {}
    positions = np.linspace(0.25, 0.75, n_rows)
    for name in bundle.input_columns:
        col = contract.column(name)
        if col.dtype == "category":
            rows[name] = [col.categories[i % len(col.categories)] for i in range(n_rows)]
            continue
        low, high = bundle.training_ranges.get(name) or col.usual or col.possible or (0.0, 1.0)
        values = low + positions * (high - low)
        if col.dtype == "integer":
            values = np.round(values)
        rows[name] = [float(v) for v in values]
    return pd.DataFrame(rows)


def runtime_requirements() -> list[str]:
    """Return pinned pip requirements for the distributions the model needs at load time."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in RUNTIME_DISTRIBUTIONS:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pins.append(name)
    return pins


OOD_METHODS = ("mahalanobis", "isolation_forest")


@dataclass
class OutOfDistributionDetector:
    """Flags patients unlike the training cohort, from the model's features.

    Two methods, chosen by ``score.ood.method``:

    ``mahalanobis`` (default)
        :class:`hivcomorb.ood.SignedLogMahalanobis`: distance from the
        training centre under a shrunk covariance of signed-log, imputed and
        standardised features. It detects unusual combinations of labs that are
        each in range, names the columns that add most to the distance, and
        costs one matrix product per row.
    ``isolation_forest``
        Median imputation followed by an :class:`~sklearn.ensemble.IsolationForest`,
        as hivcomorb used before. It separated altered rows from typical ones
        far less well on the synthetic cohort (see :mod:`hivcomorb.ood`), and
        its flags change with the forest's seed.

    Attributes
    ----------
    pipeline : estimator
        The fitted scorer; its ``score_samples`` is lower for less typical rows.
    feature_names : list of str
        Feature names the scorer expects, in order.
    threshold : float
        Rows whose score falls below it are out of distribution. For
        ``mahalanobis`` it is the ``quantile`` of out-of-fold training scores
        (each training row scored by a detector fitted without it), so that
        about that share of new patients like the training cohort is flagged.
        For ``isolation_forest`` it is the training rows' own score at ``quantile``.
    quantile : float
    method : str
        One of ``OOD_METHODS``. Detectors saved before the choice existed are isolation forests.
    """

    pipeline: Any
    feature_names: list[str]
    threshold: float
    quantile: float
    method: str = "isolation_forest"

    @classmethod
    def fit(
        cls,
        matrix: pd.DataFrame,
        *,
        method: str = "mahalanobis",
        quantile: float = 0.005,
        n_estimators: int = 200,
        seed: int = 0,
        n_jobs: int = 1,
        folds: int = 5,
        columns: Sequence[str] | None = None,
    ) -> "OutOfDistributionDetector":
        """Fit the detector on a training feature matrix.

        Parameters
        ----------
        matrix : DataFrame
            Encoded training features (``ModelBundle.features``).
        method : {"mahalanobis", "isolation_forest"}
        quantile : float
            Share of patients like the training cohort that would be flagged;
            0.005 flags rows less typical than 99.5% of them.
        n_estimators : int
            Trees of the isolation forest.
        seed : int
            Random state of the forest and of the out-of-fold split.
        n_jobs : int
            Worker threads of the isolation forest.
        folds : int
            Folds of the out-of-fold threshold of ``mahalanobis``.
        columns : sequence of str, optional
            The features the detector reads; default all. The register stage
            leaves out the indicators of category columns, so that no patient
            is flagged for belonging to a rare gender or ethnicity.
        """
        from sklearn.ensemble import IsolationForest
        from sklearn.impute import SimpleImputer
        from sklearn.model_selection import KFold
        from sklearn.pipeline import make_pipeline

        from hivcomorb.ood import SignedLogMahalanobis

        if method not in OOD_METHODS:
            raise ModelError(f"ood method must be one of {OOD_METHODS}, got {method!r}; set score.ood.method in conf")
        if not 0.0 < quantile < 0.5:
            raise ModelError(f"ood quantile must be in (0, 0.5), got {quantile}; set score.ood.quantile in conf")
        if columns is not None:
            matrix = matrix[list(columns)]
        values = matrix.to_numpy(dtype=np.float32)
        if method == "isolation_forest":
            pipeline: Any = make_pipeline(
                SimpleImputer(strategy="median", keep_empty_features=True),
                IsolationForest(n_estimators=n_estimators, random_state=seed, n_jobs=n_jobs),
            )
            scores = pipeline.fit(values).score_samples(values)
        else:
            pipeline = SignedLogMahalanobis().fit(values)
            scores = np.empty(len(values))
            for fit_rows, held_out in KFold(n_splits=min(folds, len(values)), shuffle=True, random_state=seed).split(values):
                scores[held_out] = SignedLogMahalanobis().fit(values[fit_rows]).score_samples(values[held_out])
        threshold = float(np.quantile(scores, quantile))
        return cls(pipeline=pipeline, feature_names=list(matrix.columns), threshold=threshold, quantile=quantile, method=method)

    def _values(self, matrix: pd.DataFrame) -> np.ndarray:
        values = np.asarray(matrix, dtype=np.float32)
        if list(matrix.columns) == self.feature_names:
            return values
        positions = matrix.columns.get_indexer(self.feature_names)
        if (positions < 0).any():
            absent = [name for name, position in zip(self.feature_names, positions) if position < 0]
            raise ModelError(f"the feature matrix lacks {absent}, which the out-of-distribution detector reads")
        return np.take(values, positions, axis=1)

    def score(self, matrix: pd.DataFrame) -> np.ndarray:
        """Return the score of each row; lower is less typical."""
        return self.pipeline.score_samples(self._values(matrix))

    def is_outlier(self, matrix: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Return the scores and whether each row is below the threshold."""
        scores = self.score(matrix)
        return scores, scores < self.threshold

    def describe(self, matrix: pd.DataFrame, scores: np.ndarray) -> list[str]:
        """Return why each row of ``matrix`` (with its ``scores``) is out of distribution, for the scores file.

        For ``mahalanobis``, the text gives the distance, the threshold and the
        two features that add most to the distance.
        """
        if self.method != "mahalanobis":
            return [f"unlike the training cohort (isolation score below {self.threshold:.3f})"] * len(matrix)
        values = self._values(matrix)
        columns = self.pipeline.unusual_columns(values)
        missing = np.isnan(values)
        texts = []
        for row, (score, positions) in enumerate(zip(scores, columns)):
            # A missing lab adds to the distance through its missing indicator and its imputed median,
            # so the text names it as missing, not as if its value were unusual.
            named = ", ".join(self.feature_names[p] + (" missing" if missing[row, p] else "") for p in positions if p >= 0)
            unusual = f"; most unusual: {named}" if named else ""
            distance, threshold = _distinct_texts(-float(score), -self.threshold)
            texts.append(f"unlike the training cohort (distance {distance} above {threshold}{unusual})")
        return texts


def _distinct_texts(value: float, limit: float) -> tuple[str, str]:
    """Return ``value`` and ``limit`` with the fewest decimals (one to four) that tell them apart."""
    for decimals in range(1, 5):
        shown = f"{value:.{decimals}f}", f"{limit:.{decimals}f}"
        if shown[0] != shown[1]:
            return shown
    return shown


# NOTE: errors raised before predict runs are MLflow's. With the signature of
# signature_for, MLflow 3.17.2 raises none for a data frame, but its scoring
# server still copies the whole request body into the 400 response when the
# body is not valid JSON. Models registered with an older hivcomorb keep a
# typed, required signature, whose errors repeat the whole input frame.
class HivcomorbModel(mlflow.pyfunc.PythonModel):
    """MLflow ``python_function`` model over a :class:`~hivcomorb.bundle.ModelBundle`.

    ``predict`` takes a canonical frame, checks its columns and types against
    the contract and returns a frame of ``p_<label>`` probabilities with the
    input's index. Its errors name columns and row numbers, never values.
    """

    def __init__(self) -> None:
        self._bundle: ModelBundle | None = None
        self._warned_empty: set[str] = set()
        self._contract: Contract | None = None
        self._ood: OutOfDistributionDetector | None = None

    def load_context(self, context: Any) -> None:
        """Load the bundle, the contract and, when logged, the detector from the model's artifacts."""
        import joblib

        artifacts = context.artifacts
        self._bundle = ModelBundle.load(artifacts[BUNDLE_ARTIFACT])
        self._contract = load_contract(artifacts[CONTRACT_ARTIFACT])
        if self._bundle.contract_version != self._contract.version:
            raise ModelError(
                f"the model bundle was trained on contract version {self._bundle.contract_version} "
                f"but was logged with contract version {self._contract.version}; register the model again"
            )
        ood_path = artifacts.get(OOD_ARTIFACT)
        self._ood = joblib.load(ood_path) if ood_path else None

    @property
    def bundle(self) -> ModelBundle:
        """The fitted :class:`~hivcomorb.bundle.ModelBundle`."""
        if self._bundle is None:
            raise ModelError("the model's artifacts are not loaded; load it with mlflow.pyfunc.load_model")
        return self._bundle

    @property
    def contract(self) -> Contract:
        """The data contract the model was trained on."""
        if self._contract is None:
            raise ModelError("the model's artifacts are not loaded; load it with mlflow.pyfunc.load_model")
        return self._contract

    @property
    def ood_detector(self) -> OutOfDistributionDetector | None:
        """The out-of-distribution detector, or None when none was logged."""
        return self._ood

    def _warn_empty_columns(self, frame: pd.DataFrame, columns: Sequence[str]) -> None:
        """Log once per column when a batch of at least EMPTY_COLUMN_MIN_ROWS rows has no value in it.

        spark_udf fills the columns left off a short column list with nulls,
        which would otherwise be scored as missing values without a trace.
        """
        if len(frame) < EMPTY_COLUMN_MIN_ROWS:
            return
        warned = self.__dict__.setdefault("_warned_empty", set())
        empty = [name for name in columns if name not in warned and frame[name].isna().all()]
        if empty:
            warned.update(empty)
            logger.warning(
                "Input column(s) %s are null in all %d rows of this batch and are scored as missing values. "
                "If they were left off a spark_udf call, pass every column of the model signature in its order.",
                ", ".join(repr(name) for name in empty),
                len(frame),
            )

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Return each label's probability for a canonical frame.

        Parameters
        ----------
        context : mlflow.pyfunc.PythonModelContext
            Unused: the artifacts were read in :meth:`load_context`.
        model_input : DataFrame
            One row per patient with the bundle's input columns in canonical
            units (labs as in ``data_schema/contract.yaml``, age in years).
            MLflow has already dropped the columns the signature does not
            list, such as ``patient_id``.
        params : dict, optional
            Unused; accepted for the pyfunc interface.

        Returns
        -------
        DataFrame
            One float64 column ``p_<label>`` per label, values in [0, 1].

        Raises
        ------
        ModelError
            When an input column is missing (see :func:`check_columns`), a
            category column contains a value outside the contract's
            categories (see :func:`check_categories`) or a numeric column
            contains a value that is not a number (see :func:`canonical_input`).
        """
        bundle = self.bundle
        model_input = pd.DataFrame(model_input)
        check_columns(model_input, bundle.input_columns)
        self._warn_empty_columns(model_input, bundle.input_columns)
        check_categories(model_input, self.contract, bundle.input_columns)
        frame = canonical_input(model_input, self.contract, bundle.input_columns)
        probabilities = bundle.predict_proba(frame, self.contract)
        return probabilities.rename(columns={label: probability_column(label) for label in bundle.labels})
