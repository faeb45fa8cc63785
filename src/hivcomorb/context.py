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
        """Build a context; the contract is adapted to the config's ``site`` block."""
        root = root or project_root()
        contract = load_contract(site=config.get("site"))
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
