"""The triage service's HTTP API (FastAPI): submit studies, follow jobs, fetch results, read the worklist.

Every request, allowed or refused, is appended to the audit log with its user (or "anonymous"). Uploads are
checked in full (size, DICOM, one patient, one study) before anything is stored. Job execution happens in the
worker processes (``medsight.serve.worker``); the API only queues.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel

from medsight.errors import MedsightError
from medsight.serve import auth
from medsight.serve.intake import IntakeError, check_study, store_study
from medsight.serve.runner import ModelRef
from medsight.serve.store import Store
from medsight.serve.worklist import order_rows, render_worklist

log = logging.getLogger(__name__)
RESULT_FILES = frozenset({"seg.dcm", "sr.dcm", "thumbnail.png", "result.json"})


@dataclass
class Settings:
    """What a running service needs; written by ``medsight serve`` and read by its workers."""

    home: Path
    db_url: str
    audit_url: str
    models: list[ModelRef]
    max_upload_bytes: int = 512 * 1024 * 1024
    dicomweb_url: str | None = None  # the PACS to pull from and push results to (the default endpoint)
    lease_s: float = 60.0
    tta: bool = True  # mirrored test-time augmentation for segmentation (8x the network time in 3D)
    dicomweb_others: list[str] = field(default_factory=list)  # more configured PACS a pull may name
    viewer: str | None = None  # folder of a built OHIF viewer (npm @ohif/app's dist) served beside the worklist
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        d = {"home": str(self.home), "db_url": self.db_url, "audit_url": self.audit_url,
             "models": [{**m.__dict__, "path": str(m.path)} for m in self.models],
             "max_upload_bytes": self.max_upload_bytes, "dicomweb_url": self.dicomweb_url, "lease_s": self.lease_s,
             "tta": self.tta, "dicomweb_others": self.dicomweb_others, "viewer": self.viewer}
        return json.dumps(d, indent=2)

    def dicomweb_endpoints(self) -> list[str]:
        """The only DICOMweb servers this service contacts (configuration, never a request's input)."""
        urls = ([self.dicomweb_url] if self.dicomweb_url else []) + list(self.dicomweb_others)
        return list(dict.fromkeys(u.rstrip("/") for u in urls))

    @classmethod
    def from_json(cls, text: str) -> "Settings":
        d = json.loads(text)
        d["home"] = Path(d["home"])
        d["models"] = [ModelRef(**{**m, "path": Path(m["path"])}) for m in d["models"]]
        return cls(**d)

    def model(self, name: str | None) -> ModelRef | None:
        """The served model ``name`` names; None (no name) means: route by the study's series when it runs."""
        if not self.models:
            raise HTTPException(503, "this service has no model to run; register and approve one, then restart")
        if not name:
            return None
        for m in self.models:
            if name in (m.name, f"{m.name}@{m.version}", m.package_id):
                return m
        raise HTTPException(400, f"model '{name}' is not served here; served: "
                                 f"{', '.join(m.name + '@' + m.version for m in self.models)}")


class PullRequest(BaseModel):
    study_uid: str
    model: str | None = None
    dicomweb_url: str | None = None
    push: bool = True


def create_app(settings: Settings) -> FastAPI:
    from medsight.audit.log import AuditLog

    store = Store(settings.db_url)
    audit = AuditLog(settings.audit_url)
    app = FastAPI(title="medsight triage service", version="1",
                  description="DICOM in, DICOM SEG/SR out, a worklist ordered by urgency. Bearer tokens from "
                              "`medsight users add`.")
    app.state.settings, app.state.store, app.state.audit = settings, store, audit
    app.state.supervisor = None  # set by `medsight serve` (serve.supervisor); None: workers run elsewhere

    @app.middleware("http")
    async def audit_and_limit(request: Request, call_next):  # noqa: ANN202
        request.state.user = None
        if request.method == "POST":
            too_big = _over_limit(request, settings.max_upload_bytes)
            if too_big is None:
                body, over = b"", False
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > settings.max_upload_bytes:
                        over = True
                        break
                request._body = body  # starlette serves later reads (form()) from it
                too_big = over
            if too_big:
                response: Response = JSONResponse({"detail": f"upload larger than {settings.max_upload_bytes} bytes"},
                                                  status_code=413)
                _audit(audit, request, 413)
                return response
        response = await call_next(request)
        _audit(audit, request, response.status_code)
        return response

    bearer = HTTPBearer(auto_error=False, description="A token from `medsight users add` / `users rotate`.")

    def current_user(request: Request, cred: HTTPAuthorizationCredentials | None = Depends(bearer)) -> auth.User:
        token = cred.credentials.strip() if cred is not None else None
        user = auth.user_for_token(store, token) or auth.user_for_session(store, request.cookies.get(
            auth.SESSION_COOKIE))
        if user is None:
            raise HTTPException(401, "missing, unknown or revoked token; send 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})
        request.state.user = user.name
        return user

    def allowed(action: str):  # noqa: ANN202
        def check(user: auth.User = Depends(current_user)) -> auth.User:
            if not user.may(action):
                raise HTTPException(403, f"role '{user.role}' may not {action.replace('_', ' ')}")
            return user
        return check

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        """Each supervised worker and the queue; 503 when no worker is alive (jobs would wait forever)."""
        sup = app.state.supervisor
        workers = sup.status() if sup is not None else None
        alive = sum(w["alive"] for w in workers) if workers is not None else None
        body = {"status": "ok" if alive is None or alive > 0 else "no worker alive", "workers": workers,
                "workers_alive": alive, "queue": store.counts()}
        return JSONResponse(body, status_code=200 if alive is None or alive > 0 else 503)

    @app.get("/api/v1/models")
    def models(user: auth.User = Depends(allowed("read_job"))) -> list[dict[str, str]]:
        return [{"name": m.name, "version": m.version, "package_id": m.package_id, "task": m.task}
                for m in settings.models]

    @app.post("/api/v1/studies", status_code=202, openapi_extra={"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["files"], "properties": {
            "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                      "description": "the study's DICOM Part 10 instances (one patient, one study); total body at "
                                     "most --max-upload-mb"},
            "model": {"type": "string", "description": "NAME or NAME@VERSION; empty: routed by the study's series"},
        }}}}}})
    async def submit(request: Request, user: auth.User = Depends(allowed("submit"))) -> dict[str, str]:
        """Submit one study as DICOM instances (multipart field ``files``, STOW-RS style); optional ``model``."""
        form = await request.form()
        files = [(f.filename or "", await f.read()) for f in form.getlist("files") if hasattr(f, "read")]
        model = _model_label(settings.model(str(form.get("model") or "") or None))
        try:
            study = check_study(files)
        except IntakeError as e:
            raise HTTPException(400, str(e)) from None
        job_id = _new_id()
        folder = store_study(study, settings.home / "inputs" / job_id)
        store.add_job(job_id=job_id, model=model, study_uid=study.study_uid,
                      source="upload", submitted_by=user.name)
        _note_study(store, job_id, folder)
        return {"job_id": job_id, "status": "queued"}

    @app.post("/api/v1/studies/pull", status_code=202)
    def pull(req: PullRequest, user: auth.User = Depends(allowed("submit"))) -> dict[str, str]:
        """Queue a study held by the service's PACS (a configured DICOMweb server; ``dicomweb_url`` may only name
        one of those: any other URL is refused and audited, so a submitter cannot make the service fetch or push
        elsewhere)."""
        from medsight.serve.worker import check_dicomweb

        try:
            url = check_dicomweb(settings, req.dicomweb_url)
        except PermissionError as e:
            if req.dicomweb_url:
                _audit_event(audit, "pull_refused", user.name, study_uid=req.study_uid[:128],
                             dicomweb_url=req.dicomweb_url[:500], reason=str(e))
            raise HTTPException(400, f"{e}; configured: {', '.join(settings.dicomweb_endpoints()) or 'none'}"
                                ) from None
        model = _model_label(settings.model(req.model))
        pending = store.pending_for(req.study_uid, model, "dicomweb")
        if pending is not None:  # PACS hooks fire again as instances arrive: one job per study in the queue
            return {"job_id": pending.id, "status": pending.status}
        job_id = store.add_job(model=model, study_uid=req.study_uid, source="dicomweb",
                               dicomweb_url=url, push=req.push, submitted_by=user.name)
        return {"job_id": job_id, "status": "queued"}

    @app.get("/api/v1/jobs/{job_id}")
    def job(job_id: str, user: auth.User = Depends(allowed("read_job"))) -> dict[str, Any]:
        found = store.job(job_id)
        if found is None:
            raise HTTPException(404, f"no job {job_id}")
        return found.public()

    @app.get("/api/v1/jobs/{job_id}/files/{name}")
    def result_file(job_id: str, name: str, user: auth.User = Depends(allowed("read_job"))) -> FileResponse:
        found = store.job(job_id)
        if found is None or found.status != "done" or name not in RESULT_FILES:
            raise HTTPException(404, "no such result file; results exist once the job is done")
        path = settings.home / "results" / job_id / name
        if not path.is_file():
            raise HTTPException(404, "no such result file for this job")
        media = {"dcm": "application/dicom", "png": "image/png", "json": "application/json"}[name.rsplit(".", 1)[1]]
        return FileResponse(path, media_type=media)

    @app.get("/api/v1/worklist")
    def worklist(user: auth.User = Depends(allowed("worklist"))) -> list[dict[str, Any]]:
        return order_rows(store.jobs(), viewer=bool(settings.viewer))

    @app.get("/worklist", response_class=HTMLResponse, include_in_schema=False)
    def worklist_page(request: Request) -> Response:
        user = auth.user_for_session(store, request.cookies.get(auth.SESSION_COOKIE))
        if user is None:
            return RedirectResponse("/login", status_code=303)
        request.state.user = user.name
        if not user.may("worklist"):
            raise HTTPException(403, f"role '{user.role}' may not read the worklist")
        return HTMLResponse(render_worklist(order_rows(store.jobs(), viewer=bool(settings.viewer)), user.name))

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page() -> HTMLResponse:
        return HTMLResponse(render_worklist(None, None))

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = await request.form()
        user = auth.user_for_token(store, str(form.get("token") or ""))
        if user is None:
            return HTMLResponse(render_worklist(None, None, error="unknown or revoked token"), status_code=401)
        request.state.user = user.name
        response = RedirectResponse("/worklist", status_code=303)
        response.set_cookie(auth.SESSION_COOKIE, auth.open_session(store, user), httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", max_age=auth.SESSION_TTL_S)
        return response

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request) -> Response:
        sid = request.cookies.get(auth.SESSION_COOKIE)
        if sid:
            store.drop_session(auth.digest(sid))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(auth.SESSION_COOKIE)
        return response

    @app.exception_handler(MedsightError)
    async def medsight_error(request: Request, exc: MedsightError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    if settings.viewer:  # last: its catch-all route must not hide the service's own
        from medsight.serve.viewer import mount_viewer

        def reader(request: Request) -> auth.User | None:
            cred = request.headers.get("authorization", "")
            user = auth.user_for_session(store, request.cookies.get(auth.SESSION_COOKIE)) or (
                auth.user_for_token(store, cred[7:].strip()) if cred.lower().startswith("bearer ") else None)
            if user is None or not user.may("worklist"):
                return None
            request.state.user = user.name
            return user

        mount_viewer(app, Path(settings.viewer), settings.dicomweb_url, reader)
    return app


def _note_study(store: Store, job_id: str, folder: Path) -> None:
    """Patient, accession, date... for the worklist from the moment a study is queued (headers only)."""
    from medsight.serve.routing import describe_study

    try:
        store.set_study(job_id, describe_study(folder).public())
    except Exception:  # noqa: BLE001 - the worker describes the study again before it runs; the queue goes on
        log.exception("could not describe study of job %s", job_id)


def _model_label(model: ModelRef | None) -> str:
    from medsight.serve.worker import AUTO

    return AUTO if model is None else model.name + "@" + model.version


def _audit_event(audit: Any, event: str, actor: str, **details: Any) -> None:
    """A security event: logged loudly if the audit log cannot take it (the request is refused either way)."""
    try:
        audit.append(event, actor, **details)
    except Exception:  # noqa: BLE001
        log.exception("audit write failed for %s", event)


def _new_id() -> str:
    import uuid

    return uuid.uuid4().hex


def _over_limit(request: Request, limit: int) -> bool | None:
    """True/False from Content-Length when the client sent one; None when the body must be counted."""
    value = request.headers.get("content-length")
    if value is None or not value.isdigit():
        return None
    return int(value) > limit


def _audit(audit: Any, request: Request, status: int) -> None:
    """One audit event per request; a failed write is logged loudly (the request has already been answered)."""
    try:
        audit.append("http_request", getattr(request.state, "user", None) or "anonymous",
                     method=request.method, path=request.url.path, status=status,
                     client=request.client.host if request.client else "")
    except Exception:  # noqa: BLE001 - the audit log must never crash the service; it is checked by `audit verify`
        log.exception("audit write failed for %s %s", request.method, request.url.path)
