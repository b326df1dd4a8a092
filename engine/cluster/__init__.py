"""Cohorts on Dask distributed: one task per case, on a local cluster, an existing scheduler or a batch
system (SLURM / PBS / SGE / LSF through dask-jobqueue).

Modules:
- :mod:`engine.cluster.connect`: ``--cluster`` specs (``local[:N]``, ``tcp://HOST:PORT``, ``slurm[:FILE]``)
  -> a connected ``distributed.Client``, with clear errors for an unanswering scheduler or no workers.
- :mod:`engine.cluster.worker`: the worker plugin (threads, GPU pinning, the model loaded once per worker)
  and the per-case task functions of ``segment``, ``measure`` and ``evaluate``.
- :mod:`engine.cluster.runner`: the client side: resume records (input fingerprints), submission, progress
  with a time estimate, retried cases, outputs written where the workers cannot, the run summary.

Dask (``dask[distributed]``, ``dask-jobqueue``) is imported only inside these functions: the desktop app
and the serial CLI never load it. Like the rest of engine/, nothing here imports Qt.
"""
from __future__ import annotations

from ..errors import LiverPlanError


class ClusterError(LiverPlanError):
    """The cluster cannot be reached or used (no scheduler, no workers, a folder the workers cannot see)."""


__all__ = ["ClusterError"]
