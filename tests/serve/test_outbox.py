"""The audit record comes first: a job is never done, nor pushed to the PACS, without its `job_done` event; when
the audit log cannot be written the job goes back to the queue and the next attempt finishes it."""

from __future__ import annotations

import shutil

from medsight.audit.log import AuditLog
from medsight.serve import worker as worker_mod
from medsight.serve.app import Settings
from medsight.serve.routing import InputSpec
from medsight.serve.runner import ModelRef
from medsight.serve.store import Store


class FlakyAudit:
    """The real audit log, unavailable while ``down`` is set."""

    def __init__(self, url: str) -> None:
        self.log, self.down = AuditLog(url), True

    def append(self, event: str, actor: str, **details):  # noqa: ANN003, ANN201
        if self.down:
            raise OSError("audit database unreachable")
        return self.log.append(event, actor, **details)


def test_no_job_is_done_or_pushed_before_its_audit_record(tmp_path, ct_series, monkeypatch):
    url = "http://127.0.0.1:9/dicom-web"
    settings = Settings(home=tmp_path / "home", db_url=f"sqlite:///{tmp_path / 'jobs.sqlite'}",
                        audit_url=f"sqlite:///{tmp_path / 'audit.sqlite'}", dicomweb_url=url,
                        models=[ModelRef("toy-seg", "1", "a" * 64, "segmentation", tmp_path,
                                         InputSpec().to_dict())])
    store, audit = Store(settings.db_url), FlakyAudit(settings.audit_url)
    pushed = []

    def fake_run(model, folder, result_dir, uid_seed, tta, series_uid):  # noqa: ANN001, ANN202
        result_dir.mkdir(parents=True, exist_ok=True)  # the real run_job replaces an earlier result
        shutil.copy(next(ct_series.glob("*.dcm")), result_dir / "seg.dcm")
        return {"files": ["seg.dcm"], "finding": "1 lesion(s)"}

    def fake_push(to, files):  # noqa: ANN001, ANN202
        done = [r for r in audit.log.records() if r.event == "job_done"]
        pushed.append((to, [f.name for f in files], len(done), store.job(jid).status))

    monkeypatch.setattr(worker_mod, "fetch_dicomweb", lambda u, s, folder: shutil.copytree(ct_series, folder))
    monkeypatch.setattr(worker_mod, "run_job", fake_run)
    monkeypatch.setattr(worker_mod, "verify_model", lambda m: m)
    monkeypatch.setattr(worker_mod, "push_dicomweb", fake_push)
    monkeypatch.setattr(worker_mod.time, "sleep", lambda s: None)  # the audit retries, without the waiting
    jid = store.add_job(model="auto", study_uid="1.2", source="dicomweb", dicomweb_url=url, push=True,
                        submitted_by="bridge")
    assert worker_mod.process_one(settings, store, audit, "w1")
    job = store.job(jid)
    assert (job.status, job.attempts, pushed) == ("queued", 1, [])  # not done, not pushed, not failed: retryable
    audit.down = False
    assert worker_mod.process_one(settings, store, audit, "w2")
    job = store.job(jid)
    assert job.status == "done" and job.worker == "w2" and job.attempts == 2
    assert pushed == [(url, ["seg.dcm"], 1, "running")]  # pushed after job_done was recorded, before done
    done = [r for r in audit.log.records() if r.event == "job_done"]
    assert [(r.details["job_id"], r.details["worker"]) for r in done] == [(jid, "w2")]
