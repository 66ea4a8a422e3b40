"""The audit record comes first: nothing is pushed to the PACS without its `job_push` event, no job is done without
its `job_done` event, and each job has exactly one outcome in the log: a push that fails leaves `job_push` +
`job_failed` (no `job_done`); a worker whose lease ran out while it recorded its result does not let a second
worker record `job_done` again; a retry after a kill between `job_done` and `done` does not repeat it."""

from __future__ import annotations

import shutil

import pytest

from medsight.audit.log import AuditLog
from medsight.serve import worker as worker_mod
from medsight.serve.app import Settings
from medsight.serve.routing import InputSpec
from medsight.serve.runner import ModelRef
from medsight.serve.store import Store

URL = "http://127.0.0.1:9/dicom-web"


class FlakyAudit:
    """The real audit log, unavailable while ``down`` is set."""

    def __init__(self, url: str) -> None:
        self.log, self.down = AuditLog(url), False

    def append(self, event: str, actor: str, **details):  # noqa: ANN003, ANN201
        if self.down:
            raise OSError("audit database unreachable")
        return self.log.append(event, actor, **details)

    def records(self, **kw):  # noqa: ANN003, ANN201
        return self.log.records(**kw)

    def events(self, jid: str) -> list[tuple[str, str]]:
        return [(r.event, r.details.get("worker")) for r in self.log.records() if r.details.get("job_id") == jid]


@pytest.fixture
def rig(tmp_path, ct_series, monkeypatch):
    """Settings, store, audit and a pull job, with the network, the model and the PACS replaced by fakes."""
    settings = Settings(home=tmp_path / "home", db_url=f"sqlite:///{tmp_path / 'jobs.sqlite'}",
                        audit_url=f"sqlite:///{tmp_path / 'audit.sqlite'}", dicomweb_url=URL, lease_s=0.2,
                        models=[ModelRef("toy-seg", "1", "a" * 64, "segmentation", tmp_path,
                                         InputSpec().to_dict())])
    store, audit = Store(settings.db_url), FlakyAudit(settings.audit_url)

    def fake_run(model, folder, result_dir, uid_seed, tta, series_uid):  # noqa: ANN001, ANN202
        result_dir.mkdir(parents=True, exist_ok=True)  # the real run_job replaces an earlier result
        shutil.copy(next(ct_series.glob("*.dcm")), result_dir / "seg.dcm")
        return {"files": ["seg.dcm"], "finding": "1 lesion(s)"}

    monkeypatch.setattr(worker_mod, "fetch_dicomweb", lambda u, s, folder: shutil.copytree(ct_series, folder))
    monkeypatch.setattr(worker_mod, "run_job", fake_run)
    monkeypatch.setattr(worker_mod, "verify_model", lambda m: m)
    monkeypatch.setattr(worker_mod.time, "sleep", lambda s: None)  # the audit retries, without the waiting
    jid = store.add_job(model="auto", study_uid="1.2", source="dicomweb", dicomweb_url=URL, push=True,
                        submitted_by="bridge")
    return settings, store, audit, jid


def test_no_job_is_done_or_pushed_before_its_audit_record(rig, monkeypatch):
    settings, store, audit, jid = rig
    pushed = []

    def fake_push(to, files):  # noqa: ANN001, ANN202
        events = [e for e, _ in audit.events(jid)]
        pushed.append((to, [f.name for f in files], events, store.job(jid).status))

    monkeypatch.setattr(worker_mod, "push_dicomweb", fake_push)
    audit.down = True
    assert worker_mod.process_one(settings, store, audit, "w1")
    job = store.job(jid)
    assert (job.status, job.attempts, pushed) == ("queued", 1, [])  # not done, not pushed, not failed: retryable
    audit.down = False
    assert worker_mod.process_one(settings, store, audit, "w2")
    job = store.job(jid)
    assert job.status == "done" and job.worker == "w2" and job.attempts == 2
    assert pushed == [(URL, ["seg.dcm"], ["job_push"], "finishing")]  # after its record, before done
    assert audit.events(jid) == [("job_push", "w2"), ("job_done", "w2")]


def test_a_failed_push_records_a_failure_and_no_job_done(rig, monkeypatch):
    settings, store, audit, jid = rig

    def refused(to, files):  # noqa: ANN001, ANN202
        raise ConnectionError("PACS refused the STOW-RS request")

    monkeypatch.setattr(worker_mod, "push_dicomweb", refused)
    assert worker_mod.process_one(settings, store, audit, "w1")
    job = store.job(jid)
    assert job.status == "failed" and "PACS refused" in job.error
    assert audit.events(jid) == [("job_push", "w1"), ("job_failed", "w1")]


def test_a_lapsed_lease_while_recording_does_not_give_the_job_a_second_job_done(rig, monkeypatch):
    """w1 holds its result and stalls (the push is slow, its heartbeat starved) past its lease; w2 looks for work
    meanwhile. Before, w2 claimed the job again and both recorded job_done."""
    settings, store, audit, jid = rig
    monkeypatch.setattr(worker_mod._Heartbeat, "start", lambda self: None)  # starved: no renewal
    seen = []

    def slow_push(to, files):  # noqa: ANN001, ANN202
        import time

        t_end = time.time() + 3 * settings.lease_s  # the lease (0.2 s) runs out while w1 pushes (sleep is faked)
        while time.time() < t_end:
            pass
        assert store.job(jid).lease_until < time.time()
        seen.append(worker_mod.process_one(settings, store, audit, "w2"))  # w2 must find nothing to claim

    monkeypatch.setattr(worker_mod, "push_dicomweb", slow_push)
    assert worker_mod.process_one(settings, store, audit, "w1")
    assert seen == [False]
    job = store.job(jid)
    assert (job.status, job.worker, job.attempts) == ("done", "w1", 1)
    assert [e for e in audit.events(jid) if e[0] == "job_done"] == [("job_done", "w1")]


def test_a_retry_after_a_kill_between_job_done_and_done_records_job_done_once(rig, monkeypatch):
    settings, store, audit, jid = rig
    monkeypatch.setattr(worker_mod, "push_dicomweb", lambda to, files: None)
    real_complete = store.complete

    class Killed(BaseException):
        pass

    def killed(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        raise Killed()  # SIGKILL right after job_done was written: the store never hears `done`

    monkeypatch.setattr(store, "complete", killed)
    with pytest.raises(Killed):
        worker_mod.process_one(settings, store, audit, "w1")
    assert store.job(jid).status == "finishing"
    assert store.release_worker("w1") == 1  # the supervisor saw w1 die
    monkeypatch.setattr(store, "complete", real_complete)
    assert worker_mod.process_one(settings, store, audit, "w2")
    job = store.job(jid)
    assert (job.status, job.worker, job.attempts) == ("done", "w2", 2)
    assert audit.events(jid) == [("job_push", "w1"), ("job_done", "w1"), ("job_push", "w2")]
