"""The client side of a cohort on Dask: plan (resume), check what the workers see, submit one task per
case, collect, summarise.

Resume records: after a case's files are all in place, the client writes ``<case>_<command>_done.json``
beside them: the input fingerprint (each input file's size and modification time, in nanoseconds), the
run's settings (model files, mode, options) and each output file's size and SHA-256. ``--resume`` skips a
case only when its record exists, its inputs and settings are unchanged and every output file is there with
the recorded size and digest; any other case is run again (its old files replaced).

Outputs: a case's files are written by the worker into the output folder when every worker sees that folder
(the client writes a token file there and each worker must read it back); otherwise the worker writes them
in a private temporary folder and returns their bytes, and the client writes them. Every file is written
atomically (a temporary name, then a rename): a worker killed mid-write leaves at most a hidden ``.part``
file, which the end of the run removes, and never a cut-off output.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from . import ClusterError
from .worker import START_TOPIC, can_see, file_digest

log = logging.getLogger(__name__)

SUMMARY_STEM = "cluster_summary"


@dataclass
class Job:
    """One case: its output name, what the task receives, the inputs to fingerprint and its output files.

    targets: {role: file name in the output folder} (the files the case will have when it is complete).
    """

    name: str
    payload: dict
    inputs: list[Path]
    targets: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    """What became of one case."""

    name: str
    status: str                      # "done", "skipped" or "failed"
    reason: str = ""
    worker: str = ""
    seconds: float = 0.0
    attempts: int = 0
    warnings: list[str] = field(default_factory=list)
    model_loaded: bool = False       # the task had to load the model (not the worker plugin's copy)
    value: Any = None                # the task's result (evaluate: the metrics), not written to the summary


@dataclass
class RunSummary:
    """The end of a run: counts, retried and failed cases, throughput per worker."""

    command: str
    cluster: str
    workers: list[str]
    outputs: str
    wall_seconds: float
    outcomes: list[Outcome]
    started: str = ""

    def of(self, status: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def retried(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.attempts > 1]

    def per_worker(self) -> dict[str, dict]:
        hours = max(self.wall_seconds, 1e-9) / 3600.0
        out: dict[str, dict] = {}
        for o in self.outcomes:
            if o.status == "skipped" or not o.worker:
                continue
            w = out.setdefault(o.worker, {"cases": 0, "failed": 0, "busy_seconds": 0.0})
            w["cases" if o.status == "done" else "failed"] += 1
            w["busy_seconds"] += o.seconds
        for w in out.values():
            w["cases_per_hour"] = round(w["cases"] / hours, 1)
            w["busy_seconds"] = round(w["busy_seconds"], 2)
        return out

    def to_dict(self) -> dict:
        n_workers = max(1, len(self.workers))
        done = len(self.of("done"))
        return {
            "command": self.command, "cluster": self.cluster, "started": self.started, "outputs": self.outputs,
            "workers": self.workers, "wall_seconds": round(self.wall_seconds, 2),
            "cases": len(self.outcomes), "done": done, "skipped": len(self.of("skipped")),
            "failed": len(self.of("failed")), "retried": [o.name for o in self.retried],
            "cases_per_hour": round(done / max(self.wall_seconds, 1e-9) * 3600.0, 1),
            "cases_per_hour_per_worker": round(done / max(self.wall_seconds, 1e-9) * 3600.0 / n_workers, 1),
            "per_worker": self.per_worker(),
            "per_case": [{f.name: getattr(o, f.name) for f in fields(o) if f.name != "value"} for o in self.outcomes],
        }

    def text(self) -> str:
        d = self.to_dict()
        lines = [f"Cohort summary ({self.command}, {self.cluster}, {len(self.workers)} worker(s)): "
                 f"{d['cases']} case(s): {d['done']} done, {d['skipped']} skipped (already complete), "
                 f"{d['failed']} failed, {len(d['retried'])} retried."]
        for o in self.retried:
            lines.append(f"  retried: {o.name} ({o.attempts} attempts: the worker running it stopped; the case "
                         f"was run again{' on ' + o.worker if o.worker else ''})")
        for o in self.of("failed"):
            lines.append(f"  failed: {o.name}: {o.reason}")
        lines.append(f"  wall time {self.wall_seconds:.1f} s; {d['cases_per_hour']:g} cases/hour, "
                     f"{d['cases_per_hour_per_worker']:g} cases/hour per worker")
        for w, s in d["per_worker"].items():
            lines.append(f"  {w}: {s['cases']} case(s) done, {s['failed']} failed, {s['cases_per_hour']:g} "
                         f"cases/hour, busy {s['busy_seconds']:.1f} s")
        return "\n".join(lines)

    def write(self, folder: Path) -> list[Path]:
        """``cluster_summary_<command>.json`` and ``.txt`` in ``folder`` (replaced by the next run)."""
        from ..io.atomic import write_text_atomic

        stem = Path(folder) / f"{SUMMARY_STEM}_{self.command}"
        return [write_text_atomic(stem.with_suffix(".json"), json.dumps(self.to_dict(), indent=2) + "\n",
                                  overwrite=True),
                write_text_atomic(stem.with_suffix(".txt"), self.text() + "\n", overwrite=True)]


# ------------------------------------------------------------------------------------------------
# fingerprints and resume records
# ------------------------------------------------------------------------------------------------
def fingerprint(path: Path) -> list:
    """[[relative name, size in bytes, mtime in ns], ...] of a file, or of every file in a folder (a DICOM
    series, a folder of masks), sorted. A missing path gives [[name, -1, -1]]."""
    p = Path(path)
    if p.is_file():
        st = p.stat()
        return [[p.name, st.st_size, st.st_mtime_ns]]
    if p.is_dir():
        out = []
        for f in sorted(p.rglob("*")):
            if f.is_file():
                st = f.stat()
                out.append([f.relative_to(p).as_posix(), st.st_size, st.st_mtime_ns])
        return out
    return [[p.name, -1, -1]]


def settings_digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def record_path(out: Path, command: str, name: str) -> Path:
    return Path(out) / f"{name}_{command}_done.json"


def is_complete(out: Path, command: str, job: Job, settings: dict) -> bool:
    """True when the case's record says it is done with these inputs and settings, and its files are intact."""
    rp = record_path(out, command, job.name)
    try:
        rec = json.loads(rp.read_text())
    except (OSError, ValueError):
        return False
    if rec.get("settings") != settings_digest(settings):
        return False
    if rec.get("inputs") != [[str(p), fingerprint(p)] for p in job.inputs]:
        return False
    files = rec.get("files") or {}
    if not files:
        return False
    for fname, meta in files.items():
        f = Path(out) / fname
        try:
            if f.stat().st_size != meta["size"] or file_digest(f) != meta["sha256"]:
                return False
        except (OSError, KeyError, TypeError):
            return False
    return True


def plan(jobs: Sequence[Job], out: Optional[Path], command: str, settings: dict, resume: bool,
         overwrite: bool) -> tuple[list[Job], list[Job]]:
    """(jobs to run, jobs skipped as complete). Without --resume or --overwrite, a case with any existing
    output refuses the whole run before anything starts (never replace results silently)."""
    if out is None:
        return list(jobs), []
    todo, skipped = [], []
    clashes = []
    for j in jobs:
        if resume and is_complete(out, command, j, settings):
            skipped.append(j)
            continue
        existing = [n for n in list(j.targets.values()) + [record_path(out, command, j.name).name]
                    if (Path(out) / n).exists()]
        if existing and not (resume or overwrite):
            clashes.append(f"{j.name} ({existing[0]})")
        todo.append(j)
    if clashes:
        more = f" and {len(clashes) - 3} more" if len(clashes) > 3 else ""
        raise ClusterError(f"{len(clashes)} case(s) already have results in {out}: {', '.join(clashes[:3])}{more}. "
                           "Use --resume to skip the cases that are complete (and redo the others), or "
                           "--overwrite to redo them all; nothing was run.")
    return todo, skipped


def _write_record(out: Path, command: str, job: Job, settings: dict, files: dict, worker: str) -> None:
    from ..io.atomic import write_text_atomic

    rec = {"case": job.name, "command": command, "settings": settings_digest(settings),
           "inputs": [[str(p), fingerprint(p)] for p in job.inputs],
           "files": {n: {"size": m["size"], "sha256": m["sha256"]} for n, m in files.items()},
           "worker": worker, "finished": _dt.datetime.now().isoformat(timespec="seconds")}
    write_text_atomic(record_path(out, command, job.name), json.dumps(rec, indent=2) + "\n", overwrite=True)


def _remove_parts(out: Path, names: Sequence[str]) -> int:
    """Delete the hidden temporary files (engine.io.atomic's ``.NAME.*.part*``) that a killed worker left for
    these outputs; called when no task of the run is running any more."""
    import glob

    n = 0
    for name in names:
        for p in Path(out).glob(f".{glob.escape(name)}.*.part*"):
            try:
                p.unlink()
                n += 1
            except OSError:
                pass
    return n


# ------------------------------------------------------------------------------------------------
# what the workers can see
# ------------------------------------------------------------------------------------------------
def check_visibility(client, inputs: Sequence[Path], out: Optional[Path]) -> bool:
    """Raise ClusterError when a worker cannot read an input; return whether every worker sees ``out``
    (the same folder: it must read back a token file written there now)."""
    probe, token = None, secrets.token_hex(16)
    paths = sorted({str(Path(p).resolve()) for p in inputs})
    if out is not None:
        probe = Path(out) / f".liverplan-probe-{token}"
        probe.write_text(token)
    try:
        seen = client.run(can_see, paths, str(probe) if probe else None, token)
    finally:
        if probe is not None:
            probe.unlink(missing_ok=True)
    blind = {w: r["missing"] for w, r in seen.items() if r["missing"]}
    if blind:
        w, missing = next(iter(blind.items()))
        raise ClusterError(f"{len(blind)} of {len(seen)} worker(s) cannot read the inputs: worker {w} (host "
                           f"{seen[w]['host']}) does not see {missing[0]}" + (f" and {len(missing) - 1} more"
                                                                             if len(missing) > 1 else "")
                           + ". Put the CTs on storage every worker mounts at the same path; nothing was run.")
    return out is not None and all(r["shared_out"] for r in seen.values())


# ------------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------------
def run_jobs(client, info, command: str, task: Callable[[dict], dict], jobs: Sequence[Job], *,
             out: Optional[Path], settings: dict, skipped: Sequence[Job] = (), shared: bool = True,
             plugin_name: str = "",
             progress: Optional[Callable[[str, int, int], None]] = None,
             say: Callable[[str], None] = log.info) -> RunSummary:
    """Run ``task`` once per job on the cluster and return the summary (also written in ``out``).

    A task's "failed" result is that case's failure (reported, the rest go on); a worker lost mid-case makes
    the scheduler run the case again on another worker (up to its ``allowed-failures``, default 3), after
    which the case fails with that reason. Ctrl+C cancels what is queued and re-raises.
    """
    from distributed import as_completed
    from distributed.client import FutureCancelledError

    try:
        from distributed.scheduler import KilledWorker
    except ImportError:  # pragma: no cover - older layouts
        from distributed import KilledWorker

    run_id = secrets.token_hex(6)
    started = _dt.datetime.now().isoformat(timespec="seconds")
    t0 = time.perf_counter()
    outcomes: dict[str, Outcome] = {j.name: Outcome(j.name, "skipped") for j in skipped}
    for j in skipped:
        say(f"{j.name}: already complete (inputs unchanged), skipped")
    total = len(jobs) + len(skipped)
    done_count = len(skipped)
    futures = {}
    for k, j in enumerate(jobs):
        payload = dict(j.payload, name=j.name, run=run_id, out=str(out) if out else "", shared=shared,
                       targets=j.targets, plugin=plugin_name)
        fut = client.submit(task, payload, key=f"liverplan-{command}-{k:05d}-{j.name}-{run_id}", pure=False,
                            priority=-k)
        futures[fut] = j
    if progress:
        progress(f"{command}: cases", done_count, total)
    try:
        for fut in as_completed(list(futures), loop=client.loop):
            j = futures[fut]
            try:
                res = fut.result()
            except KilledWorker as exc:
                res = {"status": "failed", "reason": "every worker that ran this case died while running it "
                       f"({exc.__class__.__name__}); out of memory? It was not tried again."}
            except FutureCancelledError:
                res = {"status": "failed", "reason": "the cluster cancelled this case (its scheduler or workers "
                       "went away)."}
            except Exception as exc:  # noqa: BLE001 - a task that raised despite its own guard
                res = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
            o = Outcome(j.name, res.get("status", "failed"), res.get("reason", ""), res.get("worker", ""),
                        float(res.get("seconds", 0.0)), warnings=list(res.get("warnings", [])),
                        model_loaded=bool(res.get("model_loaded", False)), value=res)
            if o.status == "done" and out is not None:
                try:
                    files = _collect_files(out, res.get("files") or {}, shared)
                    _write_record(out, command, j, settings, files, o.worker)
                except (OSError, ClusterError) as exc:
                    o.status, o.reason = "failed", str(exc)
                except Exception as exc:  # noqa: BLE001 - engine ExportError (disk full, ...)
                    o.status, o.reason = "failed", str(exc)
            outcomes[j.name] = o
            done_count += 1
            if o.status == "done":
                say(f"{j.name}: done on {o.worker} in {o.seconds:.1f} s"
                    + "".join(f"\n  warning: {w}" for w in o.warnings))
            else:
                say(f"{j.name}: FAILED: {o.reason}")
            if progress:
                progress(f"{command}: cases", done_count, total)
    except BaseException:
        client.cancel(list(futures))
        raise
    finally:
        if out is not None:
            _remove_parts(out, [n for j in jobs for n in j.targets.values()]
                          + [record_path(out, command, j.name).name for j in jobs])
    attempts = _attempts(client, run_id)
    for name, n in attempts.items():
        if name in outcomes:
            outcomes[name].attempts = n
    order = [j.name for j in list(skipped) + list(jobs)]
    summary = RunSummary(command=command, cluster=info.description, workers=list(info.workers),
                         outputs=("written by the workers into the shared folder " + str(out) if shared and out
                                  else ("returned to this computer and written into " + str(out)) if out
                                  else "returned to this computer"),
                         wall_seconds=time.perf_counter() - t0, outcomes=[outcomes[n] for n in order],
                         started=started)
    # workers seen during the run (a restarted worker has a new address)
    seen = sorted({o.worker for o in summary.outcomes if o.worker} | set(summary.workers))
    summary.workers = seen
    return summary


def skipped_only(command: str, skipped: Sequence[Job], out: Path,
                 say: Callable[[str], None] = log.info) -> RunSummary:
    """The summary of a run in which every case was already complete (no cluster needed)."""
    for j in skipped:
        say(f"{j.name}: already complete (inputs unchanged), skipped")
    return RunSummary(command=command, cluster="no cluster needed", workers=[], outputs=f"already in {out}",
                      wall_seconds=0.0, outcomes=[Outcome(j.name, "skipped") for j in skipped],
                      started=_dt.datetime.now().isoformat(timespec="seconds"))


def _collect_files(out: Path, files: dict, shared: bool) -> dict:
    """Write returned bytes into ``out`` (atomically), or check that the worker's files are there."""
    from ..io.atomic import write_bytes_atomic

    for name, meta in files.items():
        target = Path(out) / name
        if "data" in meta:
            data = meta.pop("data")
            if hashlib.sha256(data).hexdigest() != meta["sha256"]:
                raise ClusterError(f"{name} arrived damaged from the worker (checksum differs); it was not written.")
            write_bytes_atomic(target, data, overwrite=True)
        elif not target.is_file() or target.stat().st_size != meta["size"]:
            raise ClusterError(f"The worker wrote {name}, but it is not complete in {out} as seen from here.")
    return files


def _attempts(client, run_id: str) -> dict[str, int]:
    """How many times each case of this run was started (worker events)."""
    try:
        events = client.get_events(START_TOPIC)
    except Exception:  # noqa: BLE001 - a scheduler without events: no retry information
        return {}
    counts: Counter = Counter()
    for _, msg in events:
        if isinstance(msg, dict) and msg.get("run") == run_id:
            counts[msg.get("case")] += 1
    return dict(counts)


def host_workers(client) -> dict:
    """{host: number of workers there, "_addresses": [worker addresses]} for the worker plugin."""
    addrs = sorted(client.scheduler_info(n_workers=-1)["workers"])
    out: dict = dict(Counter(a.split("://", 1)[-1].rsplit(":", 1)[0] for a in addrs))
    out["_addresses"] = addrs
    return out


def install_plugin(client, plugin) -> None:
    """Install the worker plugin on every worker (and on workers that join later); a model that no worker
    can load is reported in each case's reason."""
    client.register_plugin(plugin, name=plugin.name)


def remove_plugin(client, plugin) -> None:
    """Take the run's plugin (and the models it holds) off the workers of a scheduler that outlives the run."""
    import contextlib

    with contextlib.suppress(Exception):
        client.unregister_worker_plugin(plugin.name)


__all__ = ["Job", "Outcome", "RunSummary", "plan", "run_jobs", "check_visibility", "fingerprint", "host_workers",
           "install_plugin", "remove_plugin", "is_complete", "record_path", "skipped_only"]
