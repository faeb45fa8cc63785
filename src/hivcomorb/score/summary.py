"""Counts an analyst can forward: reconciliation, flags per label, flags by group.

Counts accumulate chunk by chunk, so memory does not grow with the extract.
Group counts go through small-cell suppression (:mod:`hivcomorb.disclosure`)
before they are written. A group smaller than the minimum is not shown. Within
a shown group, a count is hidden when it or the rest of the group is between 1
and the minimum minus 1, because either would reveal a small number of patients.

The rows scored and the totals per label are published, and each is the sum of
one count over the groups of a column. Complementary suppression therefore
hides further counts until none of the hidden ones can be recovered by
subtraction (:func:`complementary_hidden`). It hides single counts, not whole
groups: a large group chosen to protect the sizes of the small groups loses
its patient count, and each of its flag counts is hidden only where the total
of that count needs a partner too. Bounds from counts being non-negative are
not protected, apart from one case: a flag count equal to a hidden group size
is hidden, because it bounds that size from below and with it the small
groups' total from above.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from hivcomorb import htmlkit as hk
from hivcomorb.contract import UNKNOWN, Contract
from hivcomorb.disclosure import SUPPRESSED, is_reportable

AGE_BAND = "age_band"


def age_bands(ages: pd.Series, edges: Sequence[float]) -> pd.Series:
    """Return age bands such as ``40-49`` and ``70+`` for ages in years; missing ages read ``unknown``."""
    edges = sorted(float(e) for e in edges)
    labels = [f"{int(low)}-{int(high) - 1}" for low, high in zip(edges[:-1], edges[1:])] + [f"{int(edges[-1])}+"]
    values = pd.to_numeric(ages).astype("float64").to_numpy(na_value=np.nan)
    index = np.searchsorted(np.asarray(edges), values, side="right") - 1
    out = np.where((index >= 0) & ~np.isnan(values), np.asarray(labels, dtype=object)[np.clip(index, 0, len(labels) - 1)], UNKNOWN)
    below = (index < 0) & ~np.isnan(values)
    out[below] = f"under {int(edges[0])}"
    return pd.Series(out, index=ages.index, dtype=object)


def group_codes(frame: pd.DataFrame, column: str, edges: Sequence[float]) -> tuple[np.ndarray, list[str]] | None:
    """Return the group of each row for ``column`` as codes into a list of names, or None when the column is absent.

    ``age_band`` derives from ``age``. A missing value reads ``unknown``; two
    codes may share a name, such as a missing value and the text ``unknown``.
    """
    if column == AGE_BAND:
        if "age" not in frame.columns:
            return None
        series = age_bands(frame["age"], edges)
    elif column in frame.columns:
        series = frame[column]
    else:
        return None
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    names = [str(value) for value in uniques] + [UNKNOWN]
    return np.where(codes < 0, len(uniques), codes), names


@dataclass
class ScoreCounts:
    """Running totals of one scoring run; no patient-level value is kept."""

    labels: list[str]
    groups: list[str]
    age_edges: list[float]
    rows_read: int = 0
    rows_scored: int = 0
    rows_quarantined: int = 0
    quarantine_rules: Counter = field(default_factory=Counter)
    flagged: Counter = field(default_factory=Counter)
    ood_rows: int = 0
    ood_range_rows: int = 0
    ood_detector_rows: int = 0
    by_group: dict[str, dict[str, Counter]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(Counter)))

    def add_chunk(
        self,
        frame: pd.DataFrame,
        flags: Mapping[str, np.ndarray],
        ood: np.ndarray,
        range_ood: np.ndarray,
        detector_ood: np.ndarray,
    ) -> None:
        """Add one chunk of scored rows: ``frame`` has the canonical columns, ``flags`` one array per label."""
        self.rows_scored += len(frame)
        for label, flag in flags.items():
            self.flagged[label] += int(np.sum(flag))
        self.ood_rows += int(np.sum(ood))
        self.ood_range_rows += int(np.sum(range_ood))
        self.ood_detector_rows += int(np.sum(detector_ood))
        if not len(frame):
            return
        indicators = {label: np.asarray(flag, dtype=bool) for label, flag in flags.items()}
        indicators["out_of_distribution"] = np.asarray(ood, dtype=bool)
        for column in self.groups:
            found = group_codes(frame, column, self.age_edges)
            if found is None:
                continue
            codes, names = found
            patients = np.bincount(codes, minlength=len(names))
            sums = {key: np.bincount(codes[values], minlength=len(names)) for key, values in indicators.items()}
            for position in np.flatnonzero(patients):
                counts = {label: int(sums[label][position]) for label in flags}
                counts["patients"] = int(patients[position])
                counts["out_of_distribution"] = int(sums["out_of_distribution"][position])
                self.by_group[column][names[position]].update(counts)

    def add_quarantine(self, quarantine: pd.DataFrame) -> None:
        """Count quarantined rows (distinct source rows) and entries by rule."""
        if quarantine.empty:
            return
        self.rows_quarantined += int(quarantine["source_row"].nunique())
        self.quarantine_rules.update(quarantine.drop_duplicates(["source_row", "rule"])["rule"].astype(str).tolist())

    def reconciles(self) -> bool:
        """Return whether every row read was either scored or quarantined."""
        return self.rows_read == self.rows_scored + self.rows_quarantined

    def suppressed_groups(self, minimum: int) -> dict[str, dict[str, Any]]:
        """Return the group counts with small cells, and the cells that would reveal them, replaced by ``suppressed``.

        A group smaller than ``minimum`` reads ``suppressed`` as a whole. Any
        other group keeps its entry, in which single counts, ``patients``
        included, may read ``suppressed``.
        """
        keys = [*self.labels, "out_of_distribution"]
        out: dict[str, dict[str, Any]] = {}
        for column, groups in self.by_group.items():
            names = sorted(groups)
            sizes = {name: groups[name]["patients"] for name in names}
            small = {name for name in names if not is_reportable(sizes[name], minimum)}
            hidden_sizes = complementary_hidden(sizes, small, minimum)
            visible: dict[str, Any] = {name: SUPPRESSED for name in small}
            reportable = [name for name in names if name not in small]
            for name in reportable:
                size = sizes[name]
                cells: dict[str, Any] = {"patients": SUPPRESSED if name in hidden_sizes else size}
                for key in keys:
                    count = groups[name][key]
                    bounds_size = name in hidden_sizes and count == size > 0
                    cells[key] = SUPPRESSED if bounds_size else reportable_count(count, size, minimum)
                visible[name] = cells
            # A small group's flag counts are hidden cells of every key.
            for key in keys:
                counts = {name: groups[name][key] for name in names}
                hidden = small | {name for name in reportable if visible[name][key] == SUPPRESSED}
                for name in complementary_hidden(counts, hidden, minimum) - hidden:
                    visible[name][key] = SUPPRESSED
            out[column] = {name: visible[name] for name in names}
        return out

    def as_dict(self, minimum: int) -> dict[str, Any]:
        """Return the totals and suppressed group counts as plain JSON-ready values."""
        return {
            "rows_read": self.rows_read,
            "rows_scored": self.rows_scored,
            "rows_quarantined": self.rows_quarantined,
            "reconciled": self.reconciles(),
            "quarantine_rules": dict(self.quarantine_rules),
            # Flag counts follow the small-cell rule of the group counts. The reconciliation counts
            # above are published in full, because every row must be accounted for.
            "flagged": {label: reportable_count(self.flagged[label], self.rows_scored, minimum) for label in self.labels},
            "out_of_distribution": {
                "rows": reportable_count(self.ood_rows, self.rows_scored, minimum),
                "outside_training_range": reportable_count(self.ood_range_rows, self.rows_scored, minimum),
                "unlike_training_cohort": reportable_count(self.ood_detector_rows, self.rows_scored, minimum),
            },
            "min_group_size": minimum,
            "by_group": self.suppressed_groups(minimum),
        }


def complementary_hidden(counts: Mapping[str, int], hidden: set[str], minimum: int) -> set[str]:
    """Return ``hidden`` grown until the hidden counts cannot be recovered by subtraction.

    The total over all groups is published, so the hidden cells' sum is known.
    The hidden set is safe when that sum is 0, or when it has at least two
    cells and the sum is at least ``minimum``. A sum of 0 gives away only that
    every hidden count is 0, as a shown 0 does. While the set is not safe, the
    smallest shown positive count that makes it safe is hidden too. When no
    single count is enough, the largest is hidden and the search repeats. When
    no shown positive count is left, the set is returned as it is.
    """
    hidden = set(hidden)
    while not _is_safe(counts, hidden, minimum):
        candidates = sorted((name for name in counts if name not in hidden and counts[name] > 0), key=lambda name: (counts[name], name))
        if not candidates:
            break
        enough = [name for name in candidates if _is_safe(counts, hidden | {name}, minimum)]
        hidden.add(enough[0] if enough else candidates[-1])
    return hidden


def _is_safe(counts: Mapping[str, int], hidden: set[str], minimum: int) -> bool:
    hidden_sum = sum(counts[name] for name in hidden)
    return hidden_sum == 0 or (len(hidden) > 1 and hidden_sum >= minimum)


def reportable_count(count: int, total: int, minimum: int) -> int | str:
    """Return ``count``, or ``suppressed`` when it or ``total - count`` is between 1 and ``minimum - 1``."""
    rest = total - count
    if 0 < count < minimum or 0 < rest < minimum:
        return SUPPRESSED
    return int(count)


def summary_sentences(result: Mapping[str, Any]) -> list[str]:
    """Return plain-language sentences with the run's counts."""
    counts = result["counts"]
    stamps = result["stamps"]
    sentences = [
        f"Read {counts['rows_read']} rows = scored {counts['rows_scored']} + quarantined {counts['rows_quarantined']}.",
        f"Scored with {stamps['model_name']} version {stamps['model_version']} ({stamps['setting']} setting, "
        f"data contract {stamps['contract_version']}).",
    ]
    if result.get("too_many_quarantined"):
        share = 100.0 * counts["rows_quarantined"] / counts["rows_read"]
        sentences.append(
            f"{share:.1f}% of rows were quarantined, more than the {100.0 * result['max_quarantined_share']:.0f}% allowed "
            "(score.max_quarantined_share). This usually means a mapping or export problem: check the quarantine file's "
            "rules before using these scores."
        )
    for finding in result.get("suspected_units") or ():
        sentences.append(
            f"The values of {finding['column']} look like {finding['suspected_unit']}, not the declared "
            f"{finding['declared_unit']}, and were scored as {finding['declared_unit']}. Declare the unit in the mapping "
            "file and score again before using these scores."
        )
    empty = result.get("empty_labs") or []
    if empty:
        sentences.append(
            f"No scored row has a value of {', '.join(empty)}, so every patient was scored as if "
            f"{'it was' if len(empty) == 1 else 'they were'} not measured. Check the export before using these scores. "
            "An extract that leaves a lab out on purpose should omit its column and set score.allow_missing_labs."
        )
    ood = counts["out_of_distribution"]
    if counts["rows_scored"] and ood["rows"] == 0:
        sentences.append("No scored row is out of distribution: none has a value outside the training range or is unlike the training cohort.")
    elif counts["rows_scored"]:
        rows = ood["rows"]
        share = f" ({100.0 * rows / counts['rows_scored']:.1f}%)" if isinstance(rows, int) else ""
        sentences.append(
            f"Scored rows out of distribution: {rows}{share}; with a value outside the training range: "
            f"{ood['outside_training_range']}; unlike the training cohort: {ood['unlike_training_cohort']}. Review their "
            f"scores with care. Counts from 1 to {counts['min_group_size'] - 1} are suppressed."
        )
    return sentences


def render_html(result: Mapping[str, Any], contract: Contract) -> str:
    """Return the stand-alone HTML summary of a scoring run."""
    counts = result["counts"]
    stamps = result["stamps"]
    minimum = counts["min_group_size"]
    thresholds = result["thresholds"]
    scored = counts["rows_scored"]

    meta_rows = [
        ("Model", stamps["model_name"]),
        ("Model version", stamps["model_version"]),
        ("MLflow run of the model", stamps["model_run_id"] or "not tracked"),
        ("Setting", stamps["setting"]),
        ("Data contract version", stamps["contract_version"]),
        ("Extract SHA-256", stamps["extract_sha256"]),
        ("Scored at (UTC)", stamps["scored_at"]),
    ]
    label_rows = []
    for label in result["labels"]:
        shown = counts["flagged"][label]
        share = f"{100.0 * shown / scored:.1f}%" if scored and shown != SUPPRESSED else SUPPRESSED
        label_rows.append((label, f"{thresholds[label]:.3f}", shown, share))
    parts = [
        hk.table(["Item", "Value"], meta_rows, css_class="meta"),
        hk.bullet_list(summary_sentences(result)),
        hk.table(
            ["Label", "Threshold", "Flagged", "Share of scored"],
            label_rows,
            caption=f"Patients flagged per label (counts from 1 to {minimum - 1} are suppressed)",
        ),
    ]
    if counts["quarantine_rules"]:
        parts.append(
            hk.table(
                ["Rule", "Entries"],
                sorted(counts["quarantine_rules"].items()),
                caption="Quarantine entries by rule; a row that breaks several rules has one entry per rule (see the quarantine file for row numbers)",
            )
        )
    for column, groups in counts["by_group"].items():
        header = ["Group", "Patients", *result["labels"], "Out of distribution"]
        rows = []
        for group, cells in groups.items():
            if cells == SUPPRESSED:
                rows.append((group, SUPPRESSED, *[SUPPRESSED] * (len(result["labels"]) + 1)))
            else:
                rows.append((group, cells["patients"], *[cells[label] for label in result["labels"]], cells["out_of_distribution"]))
        parts.append(hk.table(header, rows, caption=f"Flagged patients by {column.replace('_', ' ')}"))
    parts.append(
        hk.paragraph(
            f"Groups of fewer than {minimum} patients are suppressed, and so is any count that would reveal fewer than "
            f"{minimum} patients. Further cells are suppressed where the published totals would otherwise let a hidden "
            f"count be worked out by subtraction. Flags mark patients to consider for screening; they are not diagnoses."
        )
    )
    body = hk.section("scoring", "Scoring summary", "\n".join(parts))
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>"
        "<title>hivcomorb scoring summary</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}"
        "th{background:#eef3f8}caption{text-align:left;font-weight:600}</style></head><body>\n"
        f"<h1>hivcomorb scoring summary</h1>\n{body}\n"
        f"<p><small>Generated {hk.escape(generated)} for contract {hk.escape(contract.version)}.</small></p>\n"
        "</body></html>\n"
    )
