"""What every stage receives: configuration, contract and the run's folders.

Stages exchange typed files, not live objects. The layout under
``artifacts/<dataset>/`` is fixed here so that each stage finds what the
previous one wrote:

==================================  ==========================================
``source/extract.parquet``          raw extract (synthetic cohort or adapter)
``source/truth.parquet``            true label probabilities (synthetic only)
``ingest/cohort.parquet``           validated canonical cohort
``ingest/quarantine.csv``           rejected rows with row number and reason
``ingest/ingest.json``              counts, hash, validation summary
``ingest/validation.html``          Great Expectations results for auditors
``train/oof.parquet``               out-of-fold probabilities per model/setting
``train/folds.parquet``             fold assignment per row
``train/models/<setting>.joblib``   champion :class:`~hivcomorb.bundle.ModelBundle`
``train/train.json``                metrics, comparisons and oracle figures
``probe/probe.json``                recoverability results
``audit/audit.json``                explanation and fairness results
``*/figures/*.png``                 figures a stage made for the report
==================================  ==========================================

The report stage writes ``reports/<dataset>/report.html``, ``metrics.json``
and ``audit.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hivcomorb.config import deep_merge
from hivcomorb.contract import Contract, load_contract
from hivcomorb.paths import project_root


@dataclass
class RunContext:
    """Configuration, contract, seed and folders of one pipeline invocation."""

    config: dict[str, Any]
    contract: Contract
    root: Path
    device: str = "cpu"
    run_ids: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: dict[str, Any], root: Path | None = None) -> "RunContext":
        """Build a context; the contract is adapted to the ``site`` blocks of the config and of its mapping file.

        The mapping file named by ``ingest.mapping`` may carry its own ``site``
        block, which wins over the configuration's where both set a key. Every
        stage reads it here, so a stage started on its own (``hivcomorb
        train``) uses the same columns as the ingestion that wrote its cohort.
        """
        root = root or project_root()
        site = deep_merge(config.get("site") or {}, mapping_site(config))
        contract = load_contract(site=site or None)
        return cls(config=config, contract=contract, root=root)

    @property
    def dataset(self) -> str:
        """Dataset name, which names the artifact and report folders."""
        return str(self.config["dataset"])

    @property
    def seed(self) -> int:
        """Seed of every random choice in the run."""
        return int(self.config["seed"])

    @property
    def artifacts(self) -> Path:
        """Folder of intermediate files, ``artifacts/<dataset>``."""
        base = self.config.get("paths", {}).get("artifacts")
        return Path(base) / self.dataset if base else self.root / "artifacts" / self.dataset

    @property
    def reports(self) -> Path:
        """Folder of the auditor-facing outputs, ``reports/<dataset>``."""
        base = self.config.get("paths", {}).get("reports")
        return Path(base) / self.dataset if base else self.root / "reports" / self.dataset

    def stage_dir(self, stage: str) -> Path:
        """Return (and create) the artifact folder of ``stage``."""
        path = self.artifacts / stage
        path.mkdir(parents=True, exist_ok=True)
        return path


def mapping_site(config: dict[str, Any]) -> dict[str, Any]:
    """Return the ``site`` block of the mapping file that ``ingest.mapping`` names, or an empty one.

    A file that cannot be read gives an empty block here: ingestion reads it
    again and raises the error that names the file and the problem.
    """
    path = (config.get("ingest") or {}).get("mapping")
    if not path:
        return {}
    from hivcomorb.ingest.mapping import resolve_mapping_path

    try:
        raw = yaml.safe_load(resolve_mapping_path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    site = raw.get("site") if isinstance(raw, dict) else None
    return dict(site) if isinstance(site, dict) else {}
