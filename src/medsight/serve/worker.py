"""Worker processes: claim a job, fetch the study (upload store or DICOMweb), run the model, write results
atomically, push SEG/SR back to the PACS, and only then mark the job done.

A lease renewed by a heartbeat thread keeps a job with its worker; a killed worker stops renewing, and another
worker claims the job once the lease has run out. Result UIDs are derived from the job id and package id, so a
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
from medsight.serve.runner import ModelRef, run_job
from medsight.serve.store import Job, Store

log = logging.getLogger(__name__)


def _model_for(settings, job: Job) -> ModelRef:  # noqa: ANN001 - Settings (app layer, same package)
    for m in settings.models:
        if job.model in (m.name, f"{m.name}@{m.version}", m.package_id):
            return m
    raise LookupError(f"model {job.model} is no longer served")


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
            store.renew(job_id, worker, lease_s)


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
        model = verify_model(_model_for(settings, job))
        inputs = settings.home / "inputs" / job.id
        if job.source == "dicomweb" and not inputs.exists():
            fetch_dicomweb(job.dicomweb_url, job.study_uid, inputs)
        result_dir = settings.home / "results" / job.id
        summary = run_job(model, inputs, result_dir, uid_seed=f"{job.id}:{model.package_id}", tta=settings.tta)
        if job.push and job.dicomweb_url:
            push_dicomweb(job.dicomweb_url, [result_dir / f for f in ("seg.dcm", "sr.dcm") if (result_dir / f).exists()])
            summary["pushed_to"] = job.dicomweb_url
        if store.complete(job.id, worker, summary):
            _append(audit, "job_done", job.submitted_by, job_id=job.id, study_uid=job.study_uid,
                         package_id=model.package_id, worker=worker, attempts=job.attempts,
                         outputs=summary.get("files", []), referred=summary.get("referred"))
        return True
    except Exception as e:  # noqa: BLE001 - a job's failure is recorded on the job, the worker goes on
        log.exception("job %s failed", job.id)
        if store.fail(job.id, worker, f"{e.__class__.__name__}: {e}"):
            _append(audit, "job_failed", job.submitted_by, job_id=job.id, study_uid=job.study_uid, worker=worker,
                         error=f"{e.__class__.__name__}: {str(e)[:300]}")
        return True
    finally:
        beat.stop.set()


def worker_main(settings_json: str, name: str | None = None, poll_s: float = 0.5, stop_when_idle: bool = False
                ) -> None:
    """Entry point of one worker process: loop over the queue until killed (or idle, for tests/batches)."""
    from medsight.audit.log import AuditLog
    from medsight.serve.app import Settings

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker {name or os.getpid()} %(levelname)s: %(message)s")
    logging.getLogger("highdicom").setLevel(logging.WARNING)  # it narrates every attribute it copies at INFO
    settings = Settings.from_json(settings_json)
    store, audit = Store(settings.db_url), AuditLog(settings.audit_url)
    worker = name or f"{socket.gethostname()}:{os.getpid()}"
    while True:
        if not process_one(settings, store, audit, worker):
            if stop_when_idle:
                return
            time.sleep(poll_s)
