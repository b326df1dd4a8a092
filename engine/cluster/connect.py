"""``--cluster`` specs -> a connected Dask client.

Specs:
- ``local`` / ``local:N``: a LocalCluster-like SpecCluster of N worker processes on this computer, its
  scheduler and workers listening on the loopback interface (127.0.0.1) only. Default N: one per GPU, else
  half the CPU cores (at least 1). Each worker runs one case at a time with cores // N torch threads (or
  ``--threads``); with GPUs, worker i sees only GPU i (CUDA_VISIBLE_DEVICES).
- ``tcp://HOST:PORT`` (or ``tls://``): an existing scheduler (``dask scheduler`` + ``dask worker`` started
  by the user or an administrator).
- ``slurm``, ``pbs``, ``sge``, ``lsf``, optionally ``:FILE.yaml``: dask-jobqueue; the file holds the
  cluster class's settings (cores, memory, processes, queue, walltime, job_extra_directives, ...) plus
  ``jobs`` (how many batch jobs to start, default 1). Without a file, dask-jobqueue's own configuration
  (``~/.config/dask/jobqueue.yaml``) applies.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

from . import ClusterError

log = logging.getLogger(__name__)

BATCH_SYSTEMS = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster", "lsf": "LSFCluster"}
INSTALL_HINT = ("Running on a cluster needs Dask distributed (and dask-jobqueue for batch systems): "
                "pip install 'liverplan[cluster]' (or: pip install 'dask[distributed]' dask-jobqueue).")


#: Worker settings for long, CPU-heavy tasks. Dask's defaults wake each worker's event loop every few ms (its
#: statistical profiler every 10 ms, a tick every 20 ms, system and memory monitors): on busy cores every wake-up
#: takes the GIL from the case's thread between torch calls. Measured on 2 loaded cores (load 5-7), one worker,
#: the same phantom three times: 16.0-16.3 s per case with the defaults, 9.6-13.7 s with these.
QUIET_WORKER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.worker.profile.interval": "1s",
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.worker.memory.monitor-interval": "5s",
}


@dataclass
class ClusterSpec:
    """A parsed ``--cluster`` value."""

    kind: str                      # "local", "address" or a batch system name ("slurm", ...)
    n_workers: Optional[int] = None
    address: str = ""
    config_file: Optional[Path] = None
    text: str = ""


@dataclass
class ClusterInfo:
    """What the client is connected to (for messages and the summary)."""

    kind: str
    address: str
    workers: list[str] = field(default_factory=list)
    threads_per_worker: Optional[int] = None
    gpus: int = 0
    description: str = ""


def parse_cluster_spec(text: str) -> ClusterSpec:
    """``local[:N]``, ``tcp://HOST:PORT``, ``slurm[:FILE]`` (also pbs, sge, lsf) -> ClusterSpec."""
    t = (text or "").strip()
    low = t.lower()
    if low == "local" or low.startswith("local:"):
        n = None
        if ":" in t:
            raw = t.split(":", 1)[1]
            if not raw.isdigit() or int(raw) < 1:
                raise ClusterError(f"--cluster {t}: the number after 'local:' is how many worker processes to "
                                   "start, 1 or more (e.g. local:2).")
            n = int(raw)
        return ClusterSpec("local", n_workers=n, text=t)
    if re.match(r"^(tcp|tls|ws|wss|ucx)://", low):
        if not re.match(r"^[a-z]+://[^/:\s]+:\d+/?$", low):
            raise ClusterError(f"--cluster {t}: a scheduler address is tcp://HOST:PORT (e.g. tcp://10.0.0.5:8786).")
        return ClusterSpec("address", address=t.rstrip("/"), text=t)
    system = low.split(":", 1)[0]
    if system in BATCH_SYSTEMS:
        cfg = None
        if ":" in t:
            cfg = Path(t.split(":", 1)[1]).expanduser()
            if not cfg.is_file():
                raise ClusterError(f"--cluster {t}: there is no settings file {cfg} (a YAML file with the "
                                   f"{BATCH_SYSTEMS[system]} settings: cores, memory, queue, walltime, jobs...).")
        return ClusterSpec(system, config_file=cfg, text=t)
    raise ClusterError(f"--cluster {t} is not understood: use local, local:N (N worker processes on this "
                       "computer), tcp://HOST:PORT (a running Dask scheduler) or slurm[:FILE.yaml] "
                       "(also pbs, sge, lsf).")


def _require_dask() -> None:
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ClusterError(INSTALL_HINT) from None


def cpu_cores() -> int:
    """CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def gpu_count() -> int:
    """CUDA GPUs on this computer (0 without torch or CUDA)."""
    try:
        import torch

        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken driver means no GPU for our purposes
        return 0


def local_cluster(n_workers: int, threads_per_worker: int, gpus: int = 0):
    """A SpecCluster of ``n_workers`` Nanny-managed worker processes on 127.0.0.1 (nothing listens on any
    other interface; no dashboard). Each runs one task at a time; its numeric libraries get
    ``threads_per_worker`` threads; with ``gpus`` > 0 worker i sees only GPU i % gpus. A worker process that
    dies is restarted by its nanny and its case rescheduled."""
    _require_dask()
    from distributed import Nanny, Scheduler, SpecCluster

    n_threads = str(max(1, threads_per_worker))
    workers = {}
    for i in range(n_workers):
        env = {"OMP_NUM_THREADS": n_threads, "MKL_NUM_THREADS": n_threads, "OPENBLAS_NUM_THREADS": n_threads,
               "LIVERPLAN_WORKER_THREADS": n_threads}
        if gpus > 0:
            env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
        workers[f"liverplan-{i}"] = {"cls": Nanny, "options": {
            "nthreads": 1, "host": "127.0.0.1", "env": env, "dashboard": False, "silence_logs": logging.ERROR}}
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}}
    import dask

    # one case per worker at a time, the rest queued on the scheduler (Dask's default sends a worker a
    # second task in advance: a case of minutes would wait behind another while a worker stands idle)
    with dask.config.set({"distributed.scheduler.worker-saturation": 1.0, **QUIET_WORKER_CONFIG}):
        return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=logging.ERROR, name="liverplan-local")


def _restore_environ(saved: dict) -> None:
    for k in [k for k in os.environ if k not in saved]:
        del os.environ[k]
    os.environ.update(saved)


def _batch_cluster(spec: ClusterSpec):
    _require_dask()
    try:
        import dask_jobqueue
    except ImportError:
        raise ClusterError(INSTALL_HINT) from None
    cls = getattr(dask_jobqueue, BATCH_SYSTEMS[spec.kind])
    settings: dict = {}
    if spec.config_file is not None:
        settings = read_batch_settings(spec.config_file)
    jobs = int(settings.pop("jobs", 1))
    try:
        cluster = cls(**settings)
    except (TypeError, ValueError) as exc:
        raise ClusterError(f"{spec.config_file or 'The dask-jobqueue configuration'}: {exc} (see the "
                           f"{BATCH_SYSTEMS[spec.kind]} settings in dask-jobqueue's documentation).") from None
    cluster.scale(jobs=jobs)
    return cluster


def read_batch_settings(path: Path) -> dict:
    """The settings of a dask-jobqueue cluster from a YAML file (a mapping; ``jobs`` = batch jobs to start)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ClusterError(f"Cannot read the cluster settings file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ClusterError(f"The cluster settings file {path} must hold a mapping (cores: 8, memory: 32GB, ...).")
    jobs = data.get("jobs", 1)
    if not isinstance(jobs, int) or jobs < 1:
        raise ClusterError(f"{path}: 'jobs' is the number of batch jobs to start, 1 or more (got {jobs!r}).")
    return dict(data)


def _connect_error(address: str, timeout_s: float, exc: BaseException) -> ClusterError:
    return ClusterError(f"No Dask scheduler answered at {address} within {timeout_s:g} s ({type(exc).__name__}). "
                        "Check the address and port, that 'dask scheduler' is running there, and that no "
                        "firewall blocks the port; nothing was run.")


@contextlib.contextmanager
def open_cluster(spec: ClusterSpec, threads: Optional[int] = None, timeout_s: float = 30.0,
                 say: Callable[[str], None] = log.info) -> Iterator[tuple[object, ClusterInfo]]:
    """Yield ``(client, info)`` connected to the cluster ``spec`` with at least one worker.

    threads: torch threads per worker (default: the host's cores divided among its workers).
    timeout_s: how long to wait for the scheduler to answer and for the first worker to join.
    A local or batch cluster started here is closed on exit; an existing scheduler is left running.
    Raises ClusterError (in words) when the scheduler does not answer or no worker joins in time.
    """
    _require_dask()
    from distributed import Client

    if not log.isEnabledFor(logging.INFO):
        # Dask logs every worker start and stop at INFO on stderr; a clinician's console gets our lines only
        for name in ("distributed", "dask_jobqueue"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # "worker still alive after 4 s, killing" at shutdown, "restarting worker" after a crash: the run
        # summary says what matters (which case was retried)
        logging.getLogger("distributed.nanny").setLevel(logging.ERROR)
    cluster = None
    info = ClusterInfo(kind=spec.kind, address="")
    with contextlib.ExitStack() as stack:
        if spec.kind == "local":
            gpus = gpu_count()
            n = spec.n_workers or (gpus if gpus else max(1, cpu_cores() // 2))
            per = threads or max(1, cpu_cores() // n)
            say(f"Starting a local cluster: {n} worker process(es) on 127.0.0.1, {per} thread(s) each"
                + (f", {min(n, gpus)} GPU(s)" if gpus else "") + ".")
            # Dask's nanny copies its worker settings (OMP_NUM_THREADS=1, MALLOC_TRIM_THRESHOLD_, ...) into this
            # process's environment when it starts a worker; put ours back when the cluster is gone
            stack.callback(_restore_environ, dict(os.environ))
            cluster = stack.enter_context(local_cluster(n, per, gpus))
            info.threads_per_worker, info.gpus = per, gpus
            info.description = "local cluster"
            address = cluster.scheduler_address
        elif spec.kind == "address":
            address = spec.address
            info.description = f"scheduler {address}"
        else:
            say(f"Starting {BATCH_SYSTEMS[spec.kind]} jobs (dask-jobqueue) ...")
            cluster = stack.enter_context(_batch_cluster(spec))
            address = cluster.scheduler_address
            info.description = f"{spec.kind} cluster ({BATCH_SYSTEMS[spec.kind]})"
        info.address = address
        try:
            client = stack.enter_context(Client(cluster if cluster is not None else address, timeout=timeout_s,
                                                set_as_default=False))
        except (OSError, TimeoutError) as exc:
            raise _connect_error(address, timeout_s, exc) from None
        try:
            client.wait_for_workers(1, timeout=timeout_s)
        except (TimeoutError, OSError):
            hint = ("start workers with 'dask worker " + address + "' on the machines that should run cases"
                    if spec.kind == "address" else
                    "check that the batch jobs started (squeue / qstat) and can reach this computer"
                    if spec.kind in BATCH_SYSTEMS else "the local worker processes did not start (see the log)")
            raise ClusterError(f"The Dask cluster at {address} has no workers (waited {timeout_s:g} s): {hint}; "
                               "nothing was run.") from None
        if spec.kind == "local":
            # every local worker, not just the first, so the cases spread from the start
            with contextlib.suppress(TimeoutError, OSError):
                client.wait_for_workers(len(cluster.worker_spec), timeout=timeout_s)
        info.workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
        yield client, info
