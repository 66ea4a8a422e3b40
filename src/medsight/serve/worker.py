"""Worker processes: claim a job, fetch the study (upload store or a configured DICOMweb server), pick the series
and the model (serve.routing), run it, write results atomically; then, holding the job as ``finishing``, audit
``job_push`` and push SEG/SR back to the PACS, audit ``job_done``, and only then mark the job done. A failed push
leaves ``job_push`` and ``job_failed`` (never ``job_done`` and ``job_failed``); a retry after a kill that came
between ``job_done`` and the store's ``done`` does not record ``job_done`` again.

A lease renewed by a heartbeat thread keeps a job with its worker; a killed worker stops renewing, and another
worker claims the job once the lease has run out. Result UIDs are derived from (study, series, package id), so a
retried push stores the same instances again rather than duplicates.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

from medsight.serve.models import verify_model
from medsight.serve.routing import Unsupported, describe_study, result_key, route
from medsight.serve.runner import ModelRef, run_job
from medsight.serve.store import Job, Store

log = logging.getLogger(__name__)


AUTO = "auto"  # a job queued with no model named: routed by the study's series when it runs


def _model_for(settings, job: Job) -> tuple[ModelRef | None, str | None]:  # noqa: ANN001 - Settings (app layer)
    """The model a job asked for (None: route automatically), and a note when it is re-routed to a newer version.

    A job queued for ``name@1`` runs ``name@2`` when version 2 replaced 1 as the served (approved) version
    meanwhile; a name no longer served at all fails the job with a message that says so.
    """
    if job.model in ("", AUTO):
        return None, None
    for m in settings.models:
        if job.model in (m.name, f"{m.name}@{m.version}", m.package_id):
            return m, None
    name = job.model.split("@", 1)[0]
    for m in settings.models:
        if m.name == name:
            return m, f"queued for {job.model}, run by {m.name}@{m.version} (the version served now)"
    raise LookupError(f"model {job.model} is no longer served; served: "
                      f"{', '.join(m.name + '@' + m.version for m in settings.models) or 'none'}")


def check_dicomweb(settings, url: str | None) -> str:  # noqa: ANN001
    """The configured endpoint ``url`` names (or the default); anything else is refused (no request forgery)."""
    allowed = settings.dicomweb_endpoints()
    if not url:
        if not allowed:
            raise PermissionError("no DICOMweb server is configured; start the service with --dicomweb URL")
        return allowed[0]
    if url.rstrip("/") not in allowed:
        raise PermissionError("this DICOMweb URL is not one the service is configured to contact")
    return url.rstrip("/")


def fetch_dicomweb(url: str, study_uid: str, folder: Path) -> Path:
    """Retrieve every instance of the study over WADO-RS into ``folder`` (one unit: temp folder, rename)."""
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url=url)
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.parent.glob(f".{folder.name}.*"):  # a killed attempt's partial download
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for i, ds in enumerate(client.retrieve_study(study_uid)):
            ds.save_as(tmp / f"{i:05d}.dcm", enforce_file_format=True)
        if not any(tmp.iterdir()):
            raise FileNotFoundError(f"the DICOMweb server holds no instance of study {study_uid}")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def push_dicomweb(url: str, files: list[Path]) -> None:
    """STOW-RS the result objects to the PACS."""
    import pydicom
    from dicomweb_client.api import DICOMwebClient

    DICOMwebClient(url=url).store_instances([pydicom.dcmread(f) for f in files])


class _Heartbeat(threading.Thread):
    def __init__(self, store: Store, job_id: str, worker: str, lease_s: float) -> None:
        super().__init__(daemon=True)
        self.args = (store, job_id, worker, lease_s)
        self.stop = threading.Event()

    def run(self) -> None:
        store, job_id, worker, lease_s = self.args
        while not self.stop.wait(lease_s / 3):
            try:
                store.renew(job_id, worker, lease_s)
            except Exception:  # noqa: BLE001 - a busy database must not end the heartbeat (the lease would lapse)
                log.exception("job %s: lease renewal failed; trying again", job_id)


def _append(audit, event: str, actor: str, **details) -> None:  # noqa: ANN001, ANN003
    """Append an audit event, retrying a busy database (SQLite under load) before giving up loudly."""
    for attempt in range(5):
        try:
            audit.append(event, actor, **details)
            return
        except Exception:  # noqa: BLE001 - retried, then re-raised
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))


def process_one(settings, store: Store, audit, worker: str) -> bool:  # noqa: ANN001
    """Claim and finish one job; False when the queue is empty."""
    job = store.claim(worker, settings.lease_s)
    if job is None:
        return False
    beat = _Heartbeat(store, job.id, worker, settings.lease_s)
    beat.start()
    try:
        _run(settings, store, audit, worker, job)
    except Unsupported as e:  # no model fits the study: an answer, not a crash
        if store.fail(job.id, worker, str(e), status="unsupported"):
            _append(audit, "job_unsupported", job.submitted_by, job_id=job.id, study_uid=job.study_uid,
                    worker=worker, reason=str(e)[:500])
    except _AuditDown:
        log.exception("job %s: audit log unavailable; the job goes back to the queue", job.id)
        store.release(job.id, worker)
    except Exception as e:  # noqa: BLE001 - a job's failure is recorded on the job, the worker goes on
        log.exception("job %s failed", job.id)
        if store.fail(job.id, worker, f"{e.__class__.__name__}: {e}"):
            _append(audit, "job_failed", job.submitted_by, job_id=job.id, study_uid=job.study_uid, worker=worker,
                    error=f"{e.__class__.__name__}: {str(e)[:300]}")
    finally:
        beat.stop.set()
    return True


class _AuditDown(Exception):
    """The job's audit record could not be written: the job must not be marked done."""


def _run(settings, store: Store, audit, worker: str, job: Job) -> None:  # noqa: ANN001
    asked, note = _model_for(settings, job)
    inputs = settings.home / "inputs" / job.id
    url = check_dicomweb(settings, job.dicomweb_url) if job.source == "dicomweb" else None
    if url and not inputs.exists():
        fetch_dicomweb(url, job.study_uid, inputs)
    study = describe_study(inputs)
    store.set_study(job.id, study.public())
    model, series = route(study, settings.models, asked)
    if note or model.name + "@" + model.version != job.model:
        store.reroute(job.id, worker, model.name + "@" + model.version)
        if note:
            _append(audit, "job_rerouted", job.submitted_by, job_id=job.id, model=job.model,
                    to=model.name + "@" + model.version, package_id=model.package_id)
    verify_model(model)
    key = result_key(job.study_uid, series.uid, model.package_id)
    result_dir = settings.home / "results" / job.id
    prior = store.done_with_key(key)
    if prior is not None and (settings.home / "results" / prior.id).is_dir():
        summary = {**prior.summary, "same_result_as": prior.id}  # same series, same package: nothing new to store
        _copy_result(settings.home / "results" / prior.id, result_dir)
    else:
        summary = run_job(model, inputs, result_dir, uid_seed=key, tta=settings.tta, series_uid=series.uid)
    summary.update({"series_uid": series.uid, "series": series.label(), **({"rerouted": note} if note else {})})
    already = summary.get("pushed_to") if "same_result_as" in summary else None
    push = bool(job.push and url and already != url)  # a result reused from an upload still goes to the PACS
    if not store.begin_finish(job.id, worker, settings.lease_s):
        return  # the lease ran out and another worker owns the job now: its attempt records the result
    outputs = [f for f in ("seg.dcm", "sr.dcm") if (result_dir / f).exists()]
    if push:  # the outbox: nothing leaves for the PACS without an audit record saying what and where
        _record(audit, "job_push", job.submitted_by, job_id=job.id, study_uid=job.study_uid, to=url,
                outputs=outputs, worker=worker, attempts=job.attempts)
        push_dicomweb(url, [result_dir / f for f in outputs])  # a failure: job_failed, no job_done
        summary["pushed_to"] = url
    if not (job.attempts > 1 and _done_recorded(audit, job.id)):  # an earlier attempt died after recording it
        _record(audit, "job_done", job.submitted_by, job_id=job.id, study_uid=job.study_uid, series_uid=series.uid,
                package_id=model.package_id, worker=worker, attempts=job.attempts,
                outputs=summary.get("files", []), referred=summary.get("referred"), push=push)
    store.complete(job.id, worker, summary, result_key=key)


def _record(audit, event: str, actor: str, **details) -> None:  # noqa: ANN001, ANN003
    """An audit record the job cannot go on without: if it cannot be written, the job goes back to the queue."""
    try:
        _append(audit, event, actor, **details)
    except Exception as e:  # noqa: BLE001
        raise _AuditDown() from e


def _done_recorded(audit, job_id: str) -> bool:  # noqa: ANN001
    """Whether the audit log already holds this job's ``job_done`` (asked on retries only: it reads the log)."""
    return any(r.details.get("job_id") == job_id for r in audit.records(event_name="job_done"))


def _copy_result(src: Path, dest: Path) -> None:
    """The earlier job's result files for this one (one unit: temporary sibling, then rename)."""
    if dest.exists():
        shutil.rmtree(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        for f in src.iterdir():
            shutil.copy2(f, tmp / f.name)
        tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this worker when the server that started it dies (even by SIGKILL): an orphaned
    worker would keep the old settings and claim the next server's jobs."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent-pid check in the loop still catches it
        pass


def worker_main(settings_json: str, name: str | None = None, poll_s: float = 0.5, stop_when_idle: bool = False,
                parent_pid: int | None = None) -> None:
    """Entry point of one worker process: loop over the queue until killed (or idle, for tests/batches).

    With ``parent_pid`` (the supervising server), the worker exits as soon as that process is gone.
    """
    from medsight.audit.log import AuditLog
    from medsight.serve.app import Settings

    if parent_pid is not None:
        _die_with_parent()
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker {name or os.getpid()} %(levelname)s: %(message)s")
    logging.getLogger("highdicom").setLevel(logging.WARNING)  # it narrates every attribute it copies at INFO
    settings = Settings.from_json(settings_json)
    store, audit = Store(settings.db_url), AuditLog(settings.audit_url)
    worker = name or f"{socket.gethostname()}:{os.getpid()}"
    while True:
        if parent_pid is not None and os.getppid() != parent_pid:
            log.warning("the server (pid %s) is gone; worker %s stops", parent_pid, worker)
            return
        try:
            busy = process_one(settings, store, audit, worker)
        except Exception:  # noqa: BLE001 - e.g. the database unreachable for a moment: log, wait, go on
            log.exception("worker %s: could not claim a job; retrying", worker)
            busy = False
        if not busy:
            if stop_when_idle:
                return
            time.sleep(poll_s)
