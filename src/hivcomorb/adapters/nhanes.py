"""NHANES 2017-2018 adapter: the public survey files as a site extract.

The adapter is the NHANES equivalent of a hospital's export query. It reads
the CDC public-use files of cycle J (SAS transport ``.XPT``, or CSV with the
NHANES variable names), joins them on the respondent number ``SEQN``, keeps
adults and adds the columns that need more than one survey item:

``dx_<label>``
    comorbidity labels from the questionnaires (Int8: 1, 0 or missing);
``phq9_score``
    PHQ-9 total score, 0-27 points, missing unless all nine items are answered;
``egfr_ckd_epi_2021``
    eGFR in mL/min/1.73m2 from serum creatinine, age and sex (CKD-EPI 2021);
``income_poverty_quintile``
    quintile of the family income-to-poverty ratio among the adults kept,
    1 = lowest income;
``education_level``
    highest education on the adult ``DMDEDUC2`` scale (1-5), also for
    respondents aged 18-19, whose level NHANES records in ``DMDEDUC3``;
``<lab variable>_censored``
    "<" or ">" where the NHANES comment code puts a lab result outside the
    assay's detection limits, else missing.

Every other column keeps its NHANES name and unit. The adapter converts no
units: ``conf/mappings/nhanes.yaml`` declares each lab's NHANES unit, and
ingestion converts it as for any hospital extract.
``data_schema/nhanes_labels.md`` documents each column variable by variable.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from hivcomorb.errors import ConfigError, DataNotFoundError, ExtractError
from hivcomorb.paths import shared_data_dir

logger = logging.getLogger(__name__)

FOLDER_NAME = "nhanes-2017-2018"
CDC_DOWNLOAD_URL = "https://wwwn.cdc.gov/Nchs/Nhanes/2017-2018/{name}.XPT"
ID_COLUMN = "SEQN"
AGE_COLUMN = "RIDAGEYR"
SEX_COLUMN = "RIAGENDR"
CREATININE_COLUMN = "LBXSCR"
INCOME_RATIO_COLUMN = "INDFMPIR"
DEFAULT_MIN_AGE = 18.0

# pandas.read_sas (pandas 3.1) reads a true zero in an NHANES transport file
# as about 5.4e-79. No NHANES variable has a real value this small.
_ZERO_ARTEFACT = 1e-30

YES = 1
NO = 2


@dataclass(frozen=True)
class SurveyFile:
    """One NHANES public-use file that the adapter reads.

    ``codes`` marks questionnaire and demographic files, whose whole-number
    columns become nullable integers so that answer codes read ``1``, not ``1.0``.
    """

    name: str
    content: str
    codes: bool = False


# Read in this order and left-joined on SEQN to the first (demographics).
SURVEY_FILES = (
    SurveyFile("DEMO_J", "demographics, income-to-poverty ratio, education", codes=True),
    SurveyFile("BIOPRO_J", "standard biochemistry profile"),
    SurveyFile("CBC_J", "complete blood count"),
    SurveyFile("GHB_J", "glycohaemoglobin (HbA1c)"),
    SurveyFile("TCHOL_J", "total cholesterol"),
    SurveyFile("HDL_J", "HDL cholesterol"),
    SurveyFile("HSCRP_J", "high-sensitivity C-reactive protein"),
    SurveyFile("BPQ_J", "blood pressure and cholesterol questionnaire", codes=True),
    SurveyFile("DIQ_J", "diabetes questionnaire", codes=True),
    SurveyFile("KIQ_U_J", "kidney conditions questionnaire", codes=True),
    SurveyFile("MCQ_J", "medical conditions questionnaire", codes=True),
    SurveyFile("DPQ_J", "PHQ-9 depression screener", codes=True),
)

# Lab files whose row coverage among adults is logged and stored in the extract's attrs.
LAB_FILES = ("BIOPRO_J", "CBC_J", "GHB_J", "TCHOL_J", "HDL_J", "HSCRP_J")

LABEL_PREFIX = "dx_"


@dataclass(frozen=True)
class LabelRule:
    """Questionnaire items whose answers define one comorbidity label.

    The label is 1 when any item is answered 1 (yes) and every item was asked,
    and 0 when every item has an answer in ``negative_codes``. Otherwise it is
    unknown: an item was refused (7, 77), answered "don't know" (9, 99) or not
    asked. A yes among the items asked is not enough, because NHANES asks some
    items only from age 20: for respondents aged 18-19 the label would then be
    known mainly when it is positive.
    """

    label: str
    items: tuple[str, ...]
    negative_codes: tuple[int, ...] = (NO,)


LABEL_RULES = (
    # Ever told by a doctor or other health professional that you had ...
    LabelRule("hypertension", ("BPQ020",)),  # high blood pressure
    # Diabetes; 3 = "borderline" (prediabetes) counts as no diabetes.
    LabelRule("diabetes", ("DIQ010",), negative_codes=(NO, 3)),
    LabelRule("dyslipidaemia", ("BPQ080",)),  # high cholesterol
    # Heart failure, coronary heart disease, angina, heart attack, stroke.
    LabelRule("cardiovascular_disease", ("MCQ160B", "MCQ160C", "MCQ160D", "MCQ160E", "MCQ160F")),
    LabelRule("chronic_kidney_disease", ("KIQ022",)),  # weak or failing kidneys
    LabelRule("liver_disease", ("MCQ160L",)),  # any liver condition
    LabelRule("cancer", ("MCQ220",)),  # cancer or malignancy of any kind
    # COPD, emphysema, chronic bronchitis, asthma.
    LabelRule("respiratory_disease", ("MCQ160O", "MCQ160G", "MCQ160K", "MCQ010")),
)

MENTAL_HEALTH_LABEL = "mental_health"
PHQ9_ITEMS = tuple(f"DPQ0{item}0" for item in range(1, 10))
PHQ9_ITEM_SCORES = (0, 1, 2, 3)
# 10 points is the usual PHQ-9 cut point for at least moderate depression.
PHQ9_CUT_POINT = 10

ADULT_EDUCATION_CODES = (1, 2, 3, 4, 5)
# DMDEDUC3 (ages 6-19, highest grade completed) on the DMDEDUC2 scale:
# 1 = less than 9th grade, 2 = 9th-11th grade (12th grade without diploma
# included), 3 = high school graduate or GED, 4 = some college.
YOUTH_TO_ADULT_EDUCATION = {
    **{grade: 1 for grade in range(0, 9)},
    55: 1,  # less than 5th grade
    66: 1,  # less than 9th grade
    **{grade: 2 for grade in range(9, 13)},
    13: 3,  # high school graduate
    14: 3,  # GED or equivalent
    15: 4,  # more than high school
}
ADULT_EDUCATION_MIN_AGE = 20

QUINTILE_PROBABILITIES = (0.2, 0.4, 0.6, 0.8)

# Lab variable -> its NHANES comment code variable. Code 1 means below the
# lower detection limit, and the lab value is then the NHANES fill value: the
# limit divided by the square root of 2. Code 2 means above the upper limit.
LAB_COMMENT_CODES = {
    "LBXSATSI": "LBDSATLC",  # ALT
    "LBXSGTSI": "LBDSGTLC",  # GGT
    "LBXSTB": "LBDSTBLC",  # total bilirubin
    "LBXHSCRP": "LBDHRPLC",  # hs-CRP
}
COMMENT_CODE_CENSORING = {1: "<", 2: ">"}
CENSOR_SUFFIX = "_censored"


def default_source_dir() -> Path:
    """Return the default folder of the NHANES files, ``<shared data>/nhanes-2017-2018``."""
    return shared_data_dir() / FOLDER_NAME


def _download_help(names: Iterable[str]) -> str:
    names = list(names)
    example = CDC_DOWNLOAD_URL.format(name=names[0]) if names else CDC_DOWNLOAD_URL
    return (
        f"Download each file from the CDC as SAS transport, at {CDC_DOWNLOAD_URL.format(name='<FILE>')} "
        f"(for example {example}), into that folder. A CSV with the NHANES variable names "
        "(such as MCQ_J.csv) works too. Then rerun, or pass --source DIR (source.path in "
        "conf/nhanes.yaml) to use another folder. HIVCOMORB_SHARED_DATA moves the default "
        f"shared data folder. Files needed: {', '.join(f'{name}.XPT' for name in names)}."
    )


def find_survey_files(source_dir: Path) -> dict[str, Path]:
    """Locate each file of :data:`SURVEY_FILES` in ``source_dir``.

    A file may be ``<NAME>.XPT`` or ``<NAME>.csv`` in any letter case; the
    transport file wins when both exist.

    Raises
    ------
    DataNotFoundError
        If the folder or any file is missing. The message names the folder,
        each missing file and the CDC download address.
    """
    all_names = [survey_file.name for survey_file in SURVEY_FILES]
    if not source_dir.is_dir():
        raise DataNotFoundError(f"NHANES 2017-2018 folder {source_dir} not found. " + _download_help(all_names))

    by_lower_name = {path.name.lower(): path for path in source_dir.iterdir() if path.is_file()}
    found: dict[str, Path] = {}
    missing: list[str] = []
    for survey_file in SURVEY_FILES:
        for suffix in (".xpt", ".csv"):
            path = by_lower_name.get(survey_file.name.lower() + suffix)
            if path is not None:
                found[survey_file.name] = path
                break
        else:
            missing.append(survey_file.name)
    if missing:
        raise DataNotFoundError(
            f"NHANES 2017-2018 files missing from {source_dir}: {', '.join(missing)}. " + _download_help(missing)
        )
    return found


def read_survey_file(path: Path, codes: bool = False) -> pd.DataFrame:
    """Read one NHANES file (``.XPT`` or ``.csv``) with numeric columns.

    True zeros that the transport reader returns as about 5.4e-79 become 0.
    With ``codes``, columns whose values are all whole numbers become
    nullable integers (``Int64``).

    Raises
    ------
    ExtractError
        If the file cannot be parsed, has no ``SEQN`` column, has a non-numeric
        value, or has a missing, fractional or repeated ``SEQN``. The message
        gives the 1-based data row number, never the respondent number.
    """
    try:
        if path.suffix.lower() == ".xpt":
            frame = pd.read_sas(path, format="xport")
        else:
            frame = pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise ExtractError(f"NHANES file {path} cannot be read ({exc}); replace it with the file published by the CDC") from exc

    if ID_COLUMN not in frame.columns:
        raise ExtractError(f"NHANES file {path} has no {ID_COLUMN} column; it is not an NHANES public-use file")

    for column in frame.columns:
        frame[column] = _numeric_column(frame[column], path)
        values = frame[column]
        frame[column] = values.mask(values.abs() < _ZERO_ARTEFACT, 0.0)

    _check_respondent_numbers(frame[ID_COLUMN], path)
    frame[ID_COLUMN] = frame[ID_COLUMN].astype("int64")

    if codes:
        for column in frame.columns.drop(ID_COLUMN):
            values = frame[column]
            known = values.dropna()
            if len(known) and bool((known == np.round(known)).all()):
                frame[column] = values.astype("Int64")
    return frame


def _numeric_column(values: pd.Series, path: Path) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values):
        return values.astype("float64")
    converted = pd.to_numeric(values, errors="coerce")
    bad = converted.isna() & values.notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0]) + 1
        raise ExtractError(
            f"NHANES file {path}, column {values.name}, data row {row}: value is not a number; "
            "NHANES public-use files hold numeric codes only, so replace the file with the CDC one"
        )
    return converted.astype("float64")


def _check_respondent_numbers(ids: pd.Series, path: Path) -> None:
    problems = {
        "is missing": ids.isna(),
        "is not a whole number": ids.notna() & (ids != np.round(ids)),
        "repeats an earlier row": ids.duplicated() & ids.notna(),
    }
    for problem, flags in problems.items():
        if flags.any():
            row = int(np.flatnonzero(flags.to_numpy())[0]) + 1
            raise ExtractError(
                f"NHANES file {path}, column {ID_COLUMN}, data row {row}: the respondent number {problem}; "
                "each file must have one row per respondent"
            )


def derive_label(frame: pd.DataFrame, rule: LabelRule) -> pd.Series:
    """Derive one comorbidity label from questionnaire answers.

    Returns an ``Int8`` series: 1 when every item of ``rule`` was answered
    and any answer is 1 (yes), 0 when every answer is in
    ``rule.negative_codes``, missing otherwise (see :class:`LabelRule`).
    """
    answers = frame[list(rule.items)]
    asked = answers.notna().all(axis=1)
    positive = answers.eq(YES).fillna(False).any(axis=1) & asked
    negative = answers.isin(rule.negative_codes).all(axis=1)
    label = pd.Series(pd.NA, index=frame.index, dtype="Int8", name=LABEL_PREFIX + rule.label)
    label[negative] = 0
    label[positive] = 1
    return label


def derive_phq9(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Derive the PHQ-9 total score and the mental health label.

    Each item scores 0-3 points; 7 (refused) and 9 (don't know) count as not
    answered. The score (0-27 points) is missing unless all nine items are
    answered. The label is 1 when the answered items already sum to
    :data:`PHQ9_CUT_POINT` or more, which stays true whatever the unanswered
    items would add, 0 when all items are answered and the total is lower, and
    missing otherwise.

    Returns
    -------
    score : pandas.Series of Float64
    label : pandas.Series of Int8
    """
    items = frame[list(PHQ9_ITEMS)].astype("Float64")
    scored = items.where(items.isin(PHQ9_ITEM_SCORES))
    answered_total = scored.sum(axis=1, skipna=True)
    complete = scored.notna().all(axis=1)

    score = answered_total.astype("Float64").where(complete)
    score.name = "phq9_score"

    label = pd.Series(pd.NA, index=frame.index, dtype="Int8", name=LABEL_PREFIX + MENTAL_HEALTH_LABEL)
    label[complete & (answered_total < PHQ9_CUT_POINT)] = 0
    label[answered_total >= PHQ9_CUT_POINT] = 1
    return score, label


def ckd_epi_2021_egfr(creatinine_mg_dl: Any, age_years: Any, female: Any) -> np.ndarray:
    """Estimate GFR with the race-free CKD-EPI 2021 creatinine equation.

    eGFR = 142 x min(Scr/k, 1)^a x max(Scr/k, 1)^-1.200 x 0.9938^age
    x 1.012 (female), with k = 0.7 (female) or 0.9 (male) and a = -0.241
    (female) or -0.302 (male).

    Parameters
    ----------
    creatinine_mg_dl : array-like of float
        Serum creatinine (Scr), mg/dL. Values of 0 or less give NaN.
    age_years : array-like of float
        Age, years.
    female : array-like of bool

    Returns
    -------
    numpy.ndarray of float
        eGFR, mL/min/1.73m2; NaN where an input is missing.
    """
    creatinine = np.asarray(creatinine_mg_dl, dtype="float64")
    age = np.asarray(age_years, dtype="float64")
    female = np.asarray(female, dtype=bool)

    kappa = np.where(female, 0.7, 0.9)
    alpha = np.where(female, -0.241, -0.302)
    ratio = np.where(creatinine > 0, creatinine, np.nan) / kappa
    with np.errstate(invalid="ignore"):
        egfr = (
            142.0
            * np.minimum(ratio, 1.0) ** alpha
            * np.maximum(ratio, 1.0) ** -1.200
            * 0.9938**age
            * np.where(female, 1.012, 1.0)
        )
    return egfr


def income_poverty_quintiles(ratio: pd.Series) -> tuple[pd.Series, list[float]]:
    """Group the income-to-poverty ratio into quintiles of the respondents given.

    The cut points are the 20th, 40th, 60th and 80th unweighted percentiles
    (numpy's linear interpolation) of the known ratios. Quintile 1 contains
    ratios at or below the first cut point and is the most deprived.

    Returns
    -------
    quintile : pandas.Series of Int8
        1-5, missing where the ratio is missing.
    cut_points : list of float
        The four cut points, as ratios of family income to the poverty
        threshold; empty when no ratio is known.
    """
    values = pd.to_numeric(ratio, errors="coerce").astype("float64")
    known = values.dropna().to_numpy()
    quintile = pd.Series(pd.NA, index=ratio.index, dtype="Int8", name="income_poverty_quintile")
    if known.size == 0:
        return quintile, []
    cut_points = np.quantile(known, QUINTILE_PROBABILITIES)
    groups = np.searchsorted(cut_points, values.to_numpy(), side="left") + 1
    quintile[:] = groups
    quintile[values.isna()] = pd.NA
    return quintile, [float(point) for point in cut_points]


def derive_education_level(frame: pd.DataFrame) -> pd.Series:
    """Return the highest education level on the ``DMDEDUC2`` scale (1-5, Int8).

    Respondents aged 20 or more take ``DMDEDUC2``; younger respondents take
    ``DMDEDUC3`` recoded by :data:`YOUTH_TO_ADULT_EDUCATION`. Refused (7, 77)
    and don't know (9, 99) become missing.
    """
    adult_level = frame["DMDEDUC2"].where(frame["DMDEDUC2"].isin(ADULT_EDUCATION_CODES))
    youth_level = frame["DMDEDUC3"].map(YOUTH_TO_ADULT_EDUCATION)
    is_adult = frame[AGE_COLUMN] >= ADULT_EDUCATION_MIN_AGE
    level = pd.Series(np.where(is_adult, adult_level.astype("Float64"), youth_level.astype("Float64")), index=frame.index)
    return level.astype("Float64").astype("Int8").rename("education_level")


def derive_censoring(comment_codes: pd.Series) -> pd.Series:
    """Return "<", ">" or missing for each NHANES lab comment code (string dtype)."""
    flags = comment_codes.map(COMMENT_CODE_CENSORING)
    return flags.astype("string")


def _join_files(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    names = list(tables)
    joined = tables[names[0]]
    for name in names[1:]:
        table = tables[name]
        shared = sorted(set(joined.columns).intersection(table.columns) - {ID_COLUMN})
        if shared:
            raise ExtractError(f"NHANES file {name} repeats columns of an earlier file: {shared}; use the CDC files of one cycle")
        unmatched = int((~table[ID_COLUMN].isin(joined[ID_COLUMN])).sum())
        if unmatched:
            logger.warning("NHANES %s: %d rows have no demographics row and are dropped", name, unmatched)
        joined = joined.merge(table, on=ID_COLUMN, how="left", validate="one_to_one")
    return joined


def _require_columns(frame: pd.DataFrame, columns: Iterable[str], purpose: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ExtractError(
            f"NHANES files lack columns {missing}, which {purpose} needs; use the 2017-2018 (cycle J) public-use files"
        )


def add_derived_columns(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[float]]:
    """Return ``frame`` with the derived columns added, and the income quintile cut points.

    ``frame`` contains the joined NHANES files of the respondents to keep,
    and the income quintiles are computed among them.
    """
    derived: dict[str, pd.Series] = {}
    for rule in LABEL_RULES:
        _require_columns(frame, rule.items, f"the {rule.label} label")
        derived[LABEL_PREFIX + rule.label] = derive_label(frame, rule)

    _require_columns(frame, PHQ9_ITEMS, "the mental health label")
    phq9_score, mental_health = derive_phq9(frame)
    derived[mental_health.name] = mental_health
    derived[phq9_score.name] = phq9_score

    _require_columns(frame, (CREATININE_COLUMN, AGE_COLUMN, SEX_COLUMN), "eGFR")
    sex = frame[SEX_COLUMN]
    egfr = ckd_epi_2021_egfr(frame[CREATININE_COLUMN].astype("float64"), frame[AGE_COLUMN].astype("float64"), sex.eq(2).fillna(False))
    egfr[~sex.isin((1, 2)).to_numpy()] = np.nan
    derived["egfr_ckd_epi_2021"] = pd.Series(egfr, index=frame.index)

    _require_columns(frame, (INCOME_RATIO_COLUMN,), "the income quintiles")
    quintile, cut_points = income_poverty_quintiles(frame[INCOME_RATIO_COLUMN])
    derived[quintile.name] = quintile

    _require_columns(frame, ("DMDEDUC2", "DMDEDUC3"), "the education level")
    derived["education_level"] = derive_education_level(frame)

    for lab, comment in LAB_COMMENT_CODES.items():
        _require_columns(frame, (lab, comment), "the detection-limit flags")
        derived[lab + CENSOR_SUFFIX] = derive_censoring(frame[comment])

    return pd.concat([frame, pd.DataFrame(derived, index=frame.index)], axis=1), cut_points


def build_site_extract(source_dir: str | Path | None = None, *, min_age: float = DEFAULT_MIN_AGE) -> pd.DataFrame:
    """Build the NHANES 2017-2018 site extract: one row per adult respondent.

    Parameters
    ----------
    source_dir : str or Path, optional
        Folder of the NHANES files; defaults to :func:`default_source_dir`.
    min_age : float, default 18
        Youngest age kept, years (``RIDAGEYR``, which NHANES top-codes at 80).

    Returns
    -------
    pandas.DataFrame
        ``SEQN`` as a string, every column of the files read under its NHANES
        name, and the derived columns listed in the module docstring. Its
        ``attrs["nhanes"]`` contains aggregate counts: respondents, adults,
        adults with a row in each lab file, label counts and the income
        quintile cut points.

    Raises
    ------
    DataNotFoundError
        If the folder or a file is missing.
    ExtractError
        If a file cannot be read or lacks a column the adapter needs.
    """
    source_dir = Path(source_dir) if source_dir is not None else default_source_dir()
    paths = find_survey_files(source_dir)
    logger.info("NHANES: reading %d files from %s", len(paths), source_dir)

    tables = {}
    for survey_file in SURVEY_FILES:
        tables[survey_file.name] = read_survey_file(paths[survey_file.name], codes=survey_file.codes)
    joined = _join_files(tables)
    _require_columns(joined, (AGE_COLUMN,), "the adult filter")

    adults = joined.loc[joined[AGE_COLUMN].ge(min_age).fillna(False)].reset_index(drop=True)
    if adults.empty:
        raise ExtractError(f"NHANES files in {source_dir} have no respondent aged {min_age:g} or more")
    with_file = {name: int(adults[ID_COLUMN].isin(tables[name][ID_COLUMN]).sum()) for name in LAB_FILES}
    with_core_panels = int((adults[ID_COLUMN].isin(tables["BIOPRO_J"][ID_COLUMN]) & adults[ID_COLUMN].isin(tables["CBC_J"][ID_COLUMN])).sum())
    logger.info(
        "NHANES: %d respondents, %d aged %g or more, %d of them with biochemistry and blood count rows",
        len(joined),
        len(adults),
        min_age,
        with_core_panels,
    )

    extract, cut_points = add_derived_columns(adults)
    logger.info("NHANES: income-to-poverty quintile cut points %s", ", ".join(f"{point:.2f}" for point in cut_points))
    extract[ID_COLUMN] = extract[ID_COLUMN].astype("string")

    label_counts = {}
    for column in [c for c in extract.columns if c.startswith(LABEL_PREFIX)]:
        known = int(extract[column].notna().sum())
        positive = int(extract[column].eq(1).sum())
        label_counts[column[len(LABEL_PREFIX):]] = {"positive": positive, "known": known}
        logger.info("NHANES: label %s positive in %d of %d known", column[len(LABEL_PREFIX):], positive, known)

    extract.attrs["nhanes"] = {
        "cycle": "2017-2018",
        "respondents": len(joined),
        "min_age": float(min_age),
        "adults": len(extract),
        "adults_with_file": with_file,
        "adults_with_biochemistry_and_blood_count": with_core_panels,
        "labels": label_counts,
        "income_poverty_cut_points": cut_points,
    }
    return extract


def write_extract(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write the extract atomically as Parquet or CSV, chosen by the file suffix."""
    from hivcomorb.files import atomic_path

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise ConfigError(f"output file {path} must end in .parquet or .csv")
    with atomic_path(path) as tmp:
        if suffix == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)
    return path


def _adapt_command(args: argparse.Namespace) -> int:
    from hivcomorb.config import load_config, nested_get
    from hivcomorb.context import RunContext

    config = load_config(args.config)
    ctx = RunContext.from_config(config)
    out = Path(args.out) if args.out else ctx.artifacts / "source" / "extract.parquet"
    if out.suffix.lower() not in (".parquet", ".csv"):
        raise ConfigError(f"--out {out} must end in .parquet or .csv")
    source_dir = None
    configured = nested_get(config, "source.path")
    if args.source:
        source_dir = Path(args.source)
    elif configured:
        source_dir = Path(configured)

    frame = build_site_extract(source_dir)
    write_extract(frame, out)
    logger.info("NHANES: wrote %d rows to %s", len(frame), out)
    print(out)
    return 0


def add_adapter_parser(adapters: Any) -> None:
    """Add ``nhanes`` under ``hivcomorb adapt``."""
    parser = adapters.add_parser(
        "nhanes",
        help="build the NHANES 2017-2018 site extract",
        description="Join the NHANES 2017-2018 public-use files on the respondent number, keep adults, "
        "derive the comorbidity labels, eGFR and income quintiles, and write the site extract.",
    )
    parser.add_argument(
        "--source",
        default=None,
        help="folder of the NHANES .XPT or .csv files (default: source.path in the config, "
        f"else <shared data>/{FOLDER_NAME})",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="output file, .parquet or .csv (default: artifacts/<dataset>/source/extract.parquet)",
    )
    parser.add_argument(
        "--config",
        default="nhanes",
        help="dataset name (reads conf/<name>.yaml) or path to a YAML file (default: nhanes)",
    )
    parser.set_defaults(func=_adapt_command)


def register_cli(subparsers: Any) -> None:
    """Add ``hivcomorb adapt`` and its adapters (see :mod:`hivcomorb.adapters`)."""
    from hivcomorb.adapters import register_cli as register_adapt_command

    register_adapt_command(subparsers)
