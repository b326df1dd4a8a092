"""What runs on a Dask worker: the LiverPlan worker plugin and one task function per command.

The plugin (:class:`LiverPlanWorker`) is installed on every worker, also on workers that join or are
restarted later. It sets the worker's thread count (so N workers on one host do not oversubscribe its
cores), pins the worker to one GPU where there are several, and resolves and loads the model(s) once; the
loaded network stays in the worker process (engine.inference's model cache) for every case it runs.

A task takes one case (a dict of plain values: paths as text) and returns a dict: ``status`` "done" or
"failed" (with ``reason``, a sentence for the user), the worker's address, seconds, warnings and, when the
output folder is not visible to the workers, the output files' bytes for the client to write. A case's
bad input never raises out of the task (the rest of the cohort goes on); a worker that dies mid-case is
noticed by the scheduler, which runs the case again elsewhere.
"""
from __future__ import annotations

import hashlib
import logging
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger(__name__)

#: Worker plugins are registered as PLUGIN_NAME-<run id>: two LiverPlan runs sharing a scheduler keep their own.
PLUGIN_NAME = "liverplan"
#: Worker event topic: one event per case attempt (the client counts attempts to name retried cases).
START_TOPIC = "liverplan-case-start"

try:  # the plugin base class when Dask is there; the module stays importable without it
    from distributed.diagnostics.plugin import WorkerPlugin as _PluginBase
except ImportError:  # pragma: no cover - only without the cluster extra
    _PluginBase = object


class LiverPlanWorker(_PluginBase):
    """Worker plugin: threads, GPU, and the models of this run (loaded once per worker process).

    models: [(model spec, label-map spec or None), ...] as given on the command line (a folder path, an
        installed model name or 'demo'); empty for commands that run no model.
    threads: torch threads per worker; None: this host's cores divided by its workers (``host_workers``:
        {host: number of workers the client saw there}) or LIVERPLAN_WORKER_THREADS set by a local cluster.
    """

    def __init__(self, models: list, device: str = "auto", mode: str = "fast", threads: Optional[int] = None,
                 host_workers: Optional[dict] = None, name: str = PLUGIN_NAME) -> None:
        self.name = name
        self.models_spec = [tuple(m) for m in models]
        self.device = device
        self.mode = mode
        self.requested_threads = threads
        self.host_workers = dict(host_workers or {})
        self.models: list = []
        self.threads = 1
        self.device_note = ""
        self.load_seconds = 0.0
        self.setup_error = ""

    # -- dask hooks ----------------------------------------------------------------------------
    def setup(self, worker) -> None:
        """Runs once in each worker process. A failure is kept (each task then reports it) rather than
        raised: a worker that cannot set up must not take the cluster down."""
        try:
            self._setup(worker)
        except Exception as exc:  # noqa: BLE001 - reported per case, in words
            from ..errors import LiverPlanError

            self.setup_error = str(exc) if isinstance(exc, LiverPlanError) else f"{type(exc).__name__}: {exc}"
            log.warning("LiverPlan worker setup failed: %s", self.setup_error)

    def teardown(self, worker) -> None:
        """The run is over (or the plugin replaced): free the loaded networks (GPU memory above all)."""
        if self.models:
            from ..inference import clear_model_cache

            clear_model_cache()
            self.models = []

    def _setup(self, worker) -> None:
        t0 = time.perf_counter()
        host = _host_of(getattr(worker, "address", "") or "")
        self.threads = worker_threads(self.requested_threads, self.host_workers.get(host, 1))
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(self.threads)
        import SimpleITK as sitk

        # ITK's filters (reading, resampling) use every core by default: N workers on one host would each
        # take them all
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(self.threads)
        if self.models_spec:
            self.device, self.device_note = pin_gpu(worker, self.device, self.host_workers, host)
            import torch

            torch.set_num_threads(self.threads)
            from ..inference.device import resolve_device
            from ..inference.pipeline import preload
            from ..models import find_model

            self.models = [find_model(spec, label_map=lm) for spec, lm in self.models_spec]
            dev = resolve_device(self.device)
            for m in self.models:
                preload(m, dev, self.mode)
        self.load_seconds = time.perf_counter() - t0
        log.info("LiverPlan worker ready: %d thread(s)%s, %d model(s) loaded in %.1f s", self.threads,
                 f", {self.device_note}" if self.device_note else "", len(self.models), self.load_seconds)


def _host_of(address: str) -> str:
    a = address.split("://", 1)[-1]
    return a.rsplit(":", 1)[0] if ":" in a else a


def worker_threads(requested: Optional[int], workers_on_host: int) -> int:
    """Threads for one worker: the request, else what a local cluster set, else cores // workers there."""
    if requested:
        return max(1, int(requested))
    env = os.environ.get("LIVERPLAN_WORKER_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, int(workers_on_host)))


def pin_gpu(worker, device: str, host_workers: dict, host: str) -> tuple[str, str]:
    """(device to use, in words which GPU). A worker already restricted by CUDA_VISIBLE_DEVICES (a local
    cluster, a SLURM job with --gres=gpu:1) keeps it; otherwise, with several GPUs in the host, the worker
    uses GPU (its rank among the host's workers) % (GPUs), so no two workers of a host share one."""
    vis = os.environ.get("CUDA_VISIBLE_DEVICES")
    if device not in ("auto", "cuda", "gpu"):
        return device, f"device {device}"
    if vis is not None:
        return device, (f"GPU {vis} (CUDA_VISIBLE_DEVICES)" if vis.strip() else
                        "no GPU (CUDA_VISIBLE_DEVICES is empty)")
    try:
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001
        n = 0
    if n <= 1:
        return device, ("GPU 0" if n == 1 else "CPU")
    peers = sorted(a for a in host_workers.get("_addresses", []) if _host_of(a) == host)
    rank = peers.index(worker.address) if worker.address in peers else len(peers)
    return f"cuda:{rank % n}", f"GPU {rank % n} of {n}"


def _plugin(job: dict) -> LiverPlanWorker:
    from distributed import get_worker

    worker = get_worker()
    plugin = worker.plugins.get(job.get("plugin", PLUGIN_NAME))
    if plugin is None:   # registered by the client before any task; a worker that missed it sets up here
        raise RuntimeError("LiverPlan's worker plugin is not installed on this worker.")
    return plugin


def _start(job: dict) -> tuple[Any, float]:
    from distributed import get_worker

    worker = get_worker()
    worker.log_event(START_TOPIC, {"run": job["run"], "case": job["name"], "worker": worker.address,
                                   "pid": os.getpid(), "host": socket.gethostname()})
    return worker, time.perf_counter()


def _failed(job: dict, worker, t0: float, exc: BaseException) -> dict:
    from ..errors import LiverPlanError

    reason = str(exc) if isinstance(exc, LiverPlanError) else f"unexpected error {type(exc).__name__}: {exc}"
    return {"status": "failed", "name": job["name"], "reason": reason, "worker": worker.address,
            "seconds": time.perf_counter() - t0}


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _deliver(job: dict, written: list[Path], staging: Optional[Path]) -> dict:
    """Sizes and digests of the written files; their bytes too when the client writes them."""
    files = {}
    for p in written:
        p = Path(p)
        entry = {"size": p.stat().st_size, "sha256": file_digest(p)}
        if staging is not None:
            entry["data"] = p.read_bytes()
        files[p.name] = entry
    return files


def _destination(job: dict) -> tuple[Path, Optional[tempfile.TemporaryDirectory]]:
    """The shared output folder, or a private temporary folder whose files go back to the client."""
    if job["shared"]:
        return Path(job["out"]), None
    tmp = tempfile.TemporaryDirectory(prefix="liverplan-case-")
    return Path(tmp.name), tmp


# ------------------------------------------------------------------------------------------------
# the tasks
# ------------------------------------------------------------------------------------------------
def segment_task(job: dict) -> dict:
    """Segment one CT: the label map, measurement tables and provenance record, as the serial command
    (engine.report.write_segmentation_outputs writes both)."""
    from ..inference import SegmentOptions, segment
    from ..io import load_case
    from ..report import write_segmentation_outputs

    worker, t0 = _start(job)
    plugin = _plugin(job)
    tmp = None
    try:
        if plugin.setup_error:
            from ..errors import ModelError
            raise ModelError(f"The worker could not load the model: {plugin.setup_error}")
        dest, tmp = _destination(job)
        case = load_case(job["path"], series=job.get("series"))
        if job["format"] == ".dcm":
            from ..errors import ExportError
            from ..io.dicomseg import dicom_seg_problem
            problem = dicom_seg_problem(case)
            if problem:
                raise ExportError(problem)
        models = plugin.models
        loads: list[str] = []

        def progress(stage: str, done: int, total: int) -> None:
            if stage == "load model" and done == 0:   # a real load starts at 0; the plugin's cached model: 1/1
                loads.append(stage)

        opts = SegmentOptions(device=plugin.device, mode=plugin.mode, threads=plugin.threads, **job["options"])
        result = segment(case, models if len(models) > 1 else models[0], opts, progress=progress)
        names = job["targets"]
        written: list = []
        paths = {k: dest / names[k] for k in ("seg", "csv", "json", "prov")}
        _, warnings = write_segmentation_outputs(case, result, paths, job["path"], True, written)
        return {"status": "done", "name": job["name"], "worker": worker.address, "device": result.device_used,
                "model_loaded": bool(loads),
                "seconds": time.perf_counter() - t0, "warnings": warnings,
                "files": _deliver(job, written, dest if tmp is not None else None)}
    except Exception as exc:  # noqa: BLE001 - one case's problem is reported, the cohort goes on
        return _failed(job, worker, t0, exc)
    finally:
        if tmp is not None:
            tmp.cleanup()


def measure_task(job: dict) -> dict:
    """Measure one CT + label map: the measurement table (+ lesion table) and the JSON report."""
    from ..cli.measure import measure_with_warnings
    from ..io import load_case, read_label_map
    from ..report import write_measurements_csv, write_measurements_json

    worker, t0 = _start(job)
    tmp = None
    try:
        dest, tmp = _destination(job)
        # as engine.cli.measure.load_case_with_labels, with the mapping already read by the client
        case = load_case(job["path"], series=job.get("series"))
        notes: list[str] = []
        labels = read_label_map(job["labels"], case, job.get("mapping"), notes=notes)
        case.set_labels(labels, label_source=f"file: {job['labels']}")
        case.provenance.warnings.extend(n for n in notes if n not in case.provenance.warnings)
        report = measure_with_warnings(case)
        names = job["targets"]
        written = write_measurements_csv(dest / names["csv"], report, overwrite=True)
        written.append(write_measurements_json(dest / names["json"], report, overwrite=True))
        return {"status": "done", "name": job["name"], "worker": worker.address, "seconds": time.perf_counter() - t0,
                "warnings": list(report.warnings), "files": _deliver(job, written, dest if tmp is not None else None)}
    except Exception as exc:  # noqa: BLE001
        return _failed(job, worker, t0, exc)
    finally:
        if tmp is not None:
            tmp.cleanup()


def evaluate_task(job: dict) -> dict:
    """Evaluate one prediction against its reference; the metrics go back to the client (no files)."""
    from ..evaluation import evaluate_files, structure_plan

    worker, t0 = _start(job)
    try:
        res, geom, rmap = evaluate_files(job["pred"], job["ref"], job.get("pred_mapping"), job.get("ref_mapping"),
                                         **job["options"])
        return {"status": "done", "name": job["name"], "worker": worker.address, "seconds": time.perf_counter() - t0,
                "result": res, "spacing": tuple(geom.spacing), "notes": list(structure_plan(rmap).notes)}
    except Exception as exc:  # noqa: BLE001
        return _failed(job, worker, t0, exc)


def can_see(paths: list, token_file: Optional[str] = None, token: str = "") -> dict:
    """Run on each worker: which of ``paths`` exist for it, and whether it reads ``token`` in ``token_file``
    (a file the client just wrote in the output folder: the folder is shared only if the worker sees that
    very file) and can write beside it."""
    out = {"missing": [p for p in paths if not os.path.exists(p)], "shared_out": False, "host": socket.gethostname()}
    if token_file:
        try:
            out["shared_out"] = Path(token_file).read_text() == token
            if out["shared_out"]:
                with tempfile.TemporaryFile(dir=Path(token_file).parent):
                    pass
        except OSError:
            out["shared_out"] = False
    return out
