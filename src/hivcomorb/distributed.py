"""XGBoost training on a Dask cluster, for cohorts beyond one machine.

The same feature matrix as single-machine training is split into row chunks
and trained with ``xgboost.dask``. The fitted booster is loaded back into a
plain :class:`xgboost.XGBClassifier`, so bundles, SHAP and scoring treat a
distributed model exactly like a local one.

By default a local cluster is started on the loopback interface
(``train.dask.n_workers`` processes); ``train.dask.scheduler_address`` points
at an existing cluster instead.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd

from hivcomorb.errors import ModelError

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def dask_client(options: Mapping[str, Any] | None = None) -> Iterator[Any]:
    """Yield a Dask client: to ``scheduler_address`` if given, else a local loopback cluster."""
    from dask.distributed import Client, LocalCluster

    options = dict(options or {})
    address = options.get("scheduler_address")
    if address:
        logger.info("Dask: connecting to the configured scheduler")
        with Client(address) as client:
            yield client
        return
    workers = int(options.get("n_workers", 2))
    threads = int(options.get("threads_per_worker", 1))
    logger.info("Dask: starting a local cluster of %d workers x %d threads on 127.0.0.1", workers, threads)
    with LocalCluster(
        n_workers=workers,
        threads_per_worker=threads,
        host="127.0.0.1",
        dashboard_address=None,
        processes=bool(options.get("processes", True)),
    ) as cluster, Client(cluster) as client:
        yield client


def fit_xgboost_dask(
    client: Any,
    matrix: pd.DataFrame,
    target: np.ndarray,
    params: Mapping[str, Any],
    chunk_rows: int | None = None,
) -> Any:
    """Fit one binary XGBoost classifier on a Dask cluster and return it as a local model.

    Parameters
    ----------
    client : dask.distributed.Client
    matrix : pandas.DataFrame
        Encoded features (rows with a known label only), as from
        :func:`hivcomorb.features.build_matrix`.
    target : numpy.ndarray
        0/1 labels, one per row of ``matrix``.
    params : mapping
        ``XGBClassifier`` parameters, the same as for single-machine training.
    chunk_rows : int, optional
        Rows per Dask chunk; defaults to an even split over the workers.

    Returns
    -------
    xgboost.XGBClassifier
        A local classifier holding the distributed booster.
    """
    import dask.array as da
    import xgboost as xgb
    import xgboost.dask  # noqa: F401  (registers xgboost.dask)

    target = np.asarray(target)
    if len(target) != len(matrix):
        raise ModelError(f"distributed fit: {len(matrix)} feature rows but {len(target)} labels")
    if len(np.unique(target)) < 2:
        raise ModelError("distributed fit: the label has a single class, so a classifier cannot be trained")
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    chunk_rows = chunk_rows or max(1, int(np.ceil(len(matrix) / workers)))
    values = matrix.to_numpy(dtype=np.float32)
    features = da.from_array(values, chunks=(chunk_rows, values.shape[1]))
    labels = da.from_array(target.astype(np.float32), chunks=chunk_rows)

    model = xgb.dask.DaskXGBClassifier(**dict(params))
    model.client = client
    model.fit(features, labels)

    local = xgb.XGBClassifier()
    local.load_model(bytearray(model.get_booster().save_raw("ubj")))
    return local
