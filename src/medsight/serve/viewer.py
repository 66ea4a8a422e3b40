"""The OHIF viewer beside the worklist: the built ``@ohif/app`` (npm) served as static files, its DICOMweb data
source proxied, read-only, to the service's configured PACS, both behind the worklist's sign-in.

Why a proxy: the browser may reach only the service (Orthanc stays on loopback, without CORS), and a radiologist
signed in to the worklist is the one allowed to read the images; the proxy forwards GET requests to the default
``--dicomweb`` endpoint only (never a URL from the request). Why at the origin's root: the npm build loads its
chunks from ``/`` (webpack public path fixed at build time), so its files are served at ``/`` after every route of
the service (the API, the worklist, /docs win).

    npm pack @ohif/app@3.13.2 && tar xzf ohif-app-3.13.2.tgz   # ships package/dist, a built viewer
    medsight serve --dicomweb http://127.0.0.1:8042/dicom-web --ohif package/dist
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from medsight.errors import ConfigError

OHIF_VERSION = "3.13.2"  # the npm version tested (tests/serve/test_ohif.py, .ci/run)
_SPA_ROUTES = ("viewer", "segmentation", "tmtv", "microscopy", "preclinical-4d", "localbasic")
# request headers the PACS needs to answer as the viewer asks; everything else (cookies!) stays here
_FORWARD = ("accept", "range", "if-none-match", "if-modified-since")
_BACK = ("content-type", "content-length", "content-encoding", "etag", "last-modified", "content-range",
         "cache-control")

APP_CONFIG = """/* medsight: OHIF configuration written by the triage service (medsight.serve.viewer) */
window.config = {
  routerBasename: '/',
  extensions: [],
  modes: [],
  customizationService: {
    'ohif.tours': { $set: [] },  // no onboarding tour over a radiologist's images
    // OHIF 3.13 reads coords[0] of every SR measurement it places: one without image coordinates (the SR's
    // study-level finding) throws and leaves the lesions' outlines unplaced; give it none to place instead
    onBeforeSRAddMeasurement: { $set: ({ measurement }) => (measurement.coords && measurement.coords.length
      ? measurement : Object.assign({}, measurement, { coords: [{}] })) },
  },
  showStudyList: false,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: false,
  disableConfirmationPrompts: true,
  measurementTrackingMode: 'simplified',
  investigationalUseDialog: { option: 'never' },
  defaultDataSourceName: 'medsight',
  dataSources: [{
    namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
    sourceName: 'medsight',
    configuration: {
      friendlyName: %(name)s,
      name: 'medsight',
      wadoUriRoot: window.location.origin + '/dicom-web',
      qidoRoot: window.location.origin + '/dicom-web',
      wadoRoot: window.location.origin + '/dicom-web',
      qidoSupportsIncludeField: false,
      supportsReject: false,
      imageRendering: 'wadors',
      thumbnailRendering: 'wadors',
      enableStudyLazyLoad: true,
      supportsFuzzyMatching: false,
      supportsWildcard: true,
      staticWado: false,
      singlepart: false,
      bulkDataURI: { enabled: true, relativeResolution: 'studies' },
      omitQuotationForMultipartRequest: true,
    },
  }],
};
"""


def check_viewer_dir(folder: Path) -> Path:
    """The folder of a built OHIF viewer (``package/dist`` of the npm tarball); refused when it is not one."""
    folder = Path(folder).resolve()
    if not (folder / "index.html").is_file() or not any(folder.glob("app.bundle.*.js")):
        raise ConfigError(f"{folder} is not a built OHIF viewer (no index.html + app.bundle.*.js); unpack "
                          f"`npm pack @ohif/app@{OHIF_VERSION}` and give its package/dist")
    return folder


def viewer_link(study_uid: str, seg_series_uid: str | None = None) -> str:
    """The worklist's link for a study: OHIF opens it; with the SEG's series named, the SEG is shown over the
    series it was made from (OHIF loads the referenced series and overlays it, no prompt: see APP_CONFIG)."""
    link = f"/viewer?StudyInstanceUIDs={quote(study_uid)}"
    return link + (f"&initialSeriesInstanceUID={quote(seg_series_uid)}" if seg_series_uid else "")


def mount_viewer(app: FastAPI, folder: Path, pacs_url: str | None, signed_in: Callable[[Request], object | None],
                 name: str = "PACS (through medsight)") -> None:
    """Add the viewer's routes to ``app`` (call it after every other route: the catch-all comes last).

    ``signed_in(request)`` returns the worklist user of the request (session cookie or bearer token) or None.
    """
    import httpx

    root = check_viewer_dir(folder)
    config = APP_CONFIG % {"name": json.dumps(name)}
    client = httpx.AsyncClient(timeout=httpx.Timeout(120, connect=10))

    def need_user(request: Request, page: bool) -> Response | None:
        if signed_in(request) is not None:
            return None
        if page:  # a radiologist following a link: sign in first
            return RedirectResponse("/login", status_code=303)
        raise HTTPException(401, "sign in to the worklist first", headers={"WWW-Authenticate": "Bearer"})

    @app.get("/app-config.js", include_in_schema=False)
    def app_config(request: Request) -> Response:
        need_user(request, page=False)
        return Response(config, media_type="text/javascript", headers={"Cache-Control": "no-store"})

    @app.get("/dicom-web/{path:path}", include_in_schema=False)
    async def dicomweb(path: str, request: Request) -> Response:
        """Read-only DICOMweb (QIDO/WADO) for the viewer, to the configured PACS only."""
        need_user(request, page=False)
        if pacs_url is None:
            raise HTTPException(503, "no DICOMweb server is configured (--dicomweb)")
        if ".." in path.split("/"):
            raise HTTPException(400, "bad path")
        headers = {k: v for k, v in request.headers.items() if k.lower() in _FORWARD}
        headers["accept-encoding"] = request.headers.get("accept-encoding", "identity")  # the body goes back raw
        upstream = client.build_request("GET", f"{pacs_url.rstrip('/')}/{path}", params=request.query_params,
                                        headers=headers)
        answer = await client.send(upstream, stream=True)
        back = {k: v for k, v in answer.headers.items() if k.lower() in _BACK}
        return StreamingResponse(answer.aiter_raw(), status_code=answer.status_code, headers=back,
                                 background=_closer(answer))

    @app.get("/{path:path}", include_in_schema=False)
    def viewer_file(path: str, request: Request) -> Response:
        """The viewer's own files; its page routes (``/viewer?...``) answer index.html (a single-page app)."""
        first = path.split("/", 1)[0]
        target = (root / path).resolve()
        is_file = path and target.is_file() and root in target.parents
        if not is_file and first not in _SPA_ROUTES:
            raise HTTPException(404, "not found")
        refused = need_user(request, page=not is_file)
        if refused is not None:
            return refused
        if not is_file:
            return FileResponse(root / "index.html", media_type="text/html", headers={"Cache-Control": "no-store"})
        media = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if target.suffix == ".wasm":
            media = "application/wasm"
        return FileResponse(target, media_type=media)


def _closer(answer):  # noqa: ANN001, ANN202
    from starlette.background import BackgroundTask

    return BackgroundTask(answer.aclose)
