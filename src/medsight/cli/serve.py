"""``medsight serve`` (the triage service) and ``medsight users`` (its accounts)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from medsight.cli.audited import audited, current_event
from medsight.errors import ConfigError


def _home(home: Path | None) -> Path:
    root = Path(home or os.environ.get("MEDSIGHT_HOME") or Path.home() / ".medsight")
    root.mkdir(parents=True, exist_ok=True)
    return root


_HOME = click.option("--home", type=click.Path(path_type=Path), default=None,
                     help="Service folder (default: $MEDSIGHT_HOME or ~/.medsight): job store, inputs, results.")
_DB = click.option("--db", "db_url", default=None,
                   help="Job store URL (default: SQLite file in the home folder; postgresql+psycopg://... works).")


def _store(home: Path | None, db_url: str | None):  # noqa: ANN202
    from medsight.serve.store import Store, default_url

    return Store(db_url or default_url(_home(home)))


@click.group()
def users() -> None:
    """Accounts of the triage service: submitter (sends studies), reader (worklist), admin (both)."""


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["submitter", "reader", "admin"]), required=True)
@_HOME
@_DB
@audited("users.add")
def users_add(name: str, role: str, home: Path | None, db_url: str | None) -> None:
    """Add a user and print its access token ONCE (only its SHA-256 is stored)."""
    from medsight.serve.auth import add_user

    token = add_user(_store(home, db_url), name, role)
    current_event().note(user=name, role=role)  # never the token
    click.echo(token)


@users.command("revoke")
@click.argument("name")
@_HOME
@_DB
@audited("users.revoke")
def users_revoke(name: str, home: Path | None, db_url: str | None) -> None:
    """Revoke a user's token and end its sessions."""
    _store(home, db_url).revoke_user(name)
    current_event().note(user=name)
    click.echo(f"revoked {name}")


@users.command("list")
@_HOME
@_DB
def users_list(home: Path | None, db_url: str | None) -> None:
    """List users, roles and whether they are revoked (never tokens)."""
    click.echo(json.dumps(_store(home, db_url).list_users(), indent=2))


@users.command("rotate")
@click.argument("name")
@_HOME
@_DB
@audited("users.rotate")
def users_rotate(name: str, home: Path | None, db_url: str | None) -> None:
    """Give NAME a new token (printed ONCE); the old token and its sessions stop working. Re-activates a revoked
    user."""
    from medsight.serve.auth import rotate_user

    token = rotate_user(_store(home, db_url), name)
    current_event().note(user=name)  # never the token
    click.echo(token)


@users.command("orthanc-hook")
@click.argument("name")
@click.option("--service", "service_url", required=True, help="URL of `medsight serve` as Orthanc reaches it.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Lua file to write (mode 600).")
@_HOME
@_DB
@audited("users.orthanc-hook", outputs=("out",))
def users_orthanc_hook(name: str, service_url: str, out: Path, home: Path | None, db_url: str | None) -> None:
    """Write Orthanc's Lua hook that queues each stable study, with a new token for NAME (a submitter, added if
    missing; an existing NAME's token is rotated). Add the file to Orthanc's "LuaScripts" and restart Orthanc."""
    from medsight.files import atomic_write_text
    from medsight.serve.auth import add_user, rotate_user
    from medsight.serve.orthanc import lua_hook

    store = _store(home, db_url)
    existed = bool(store.user(name))
    token = rotate_user(store, name) if existed else add_user(store, name, "submitter")
    current_event().note(user=name, rotated=existed)  # never the token
    atomic_write_text(out, lua_hook(service_url, token))
    out.chmod(0o600)
    click.echo(f"wrote {out} (token of '{name}' inside: keep it readable by Orthanc only)")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int,
              help="Job worker processes (supervised: a dead one is restarted).")
@click.option("--model", "models", multiple=True,
              help="Model package folder or registered NAME[@VERSION] (repeatable). Default: the newest approved "
                   "version of every registered name.")
@click.option("--allow-candidates", is_flag=True,
              help="Also serve registered versions not yet approved (a trial; never for patients).")
@click.option("--dicomweb", "dicomweb_urls", multiple=True,
              help="DICOMweb root of a PACS to pull from / push to (repeatable; the first is the default). The "
                   "service contacts no other server.")
@click.option("--max-upload-mb", default=512, show_default=True, type=int)
@click.option("--ohif", "ohif_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Folder of a built OHIF viewer (`npm pack @ohif/app`, its package/dist): served at / beside the "
                   "worklist, reading the default --dicomweb PACS through the service (signed-in users only).")
@click.option("--tta/--no-tta", default=True, show_default=True,
              help="Mirrored test-time augmentation for segmentation (more robust, 8x the network time in 3D).")
@_HOME
@_DB
def serve(host: str, port: int, workers: int, models: tuple[str, ...], allow_candidates: bool,
          dicomweb_urls: tuple[str, ...], max_upload_mb: int, ohif_dir: Path | None, tta: bool, home: Path | None,
          db_url: str | None) -> None:
    """Run the triage service: HTTP API + worklist page, and WORKERS supervised processes that run the models."""
    import signal

    import uvicorn

    from medsight.serve.app import Settings, create_app
    from medsight.serve.models import resolve_models
    from medsight.serve.store import default_url
    from medsight.serve.supervisor import Supervisor
    from medsight.serve.viewer import check_viewer_dir

    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    root = _home(home)
    served = resolve_models(list(models), allow_candidates=allow_candidates)
    from medsight.audit.log import default_url as audit_default

    settings = Settings(home=root, db_url=db_url or default_url(root), audit_url=audit_default(), models=served,
                        max_upload_bytes=max_upload_mb * 1024 * 1024,
                        dicomweb_url=dicomweb_urls[0] if dicomweb_urls else None,
                        dicomweb_others=list(dicomweb_urls[1:]), tta=tta,
                        viewer=str(check_viewer_dir(ohif_dir)) if ohif_dir else None)
    app = create_app(settings)  # opens (and creates) the store before the workers start
    supervisor = Supervisor(settings.to_json(), workers, on_death=app.state.store.release_worker)
    app.state.supervisor = supervisor

    def _stop(signum: int, _frame: object) -> None:
        # uvicorn re-raises the signal that stopped it once it has shut down; the default action would kill this
        # process before the `finally` below ends the workers (they were left running, claiming the next server's
        # jobs). Turning the signal into an exception lets the `finally` run.
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        supervisor.start()
        click.echo(f"medsight serve: http://{host}:{port}  models: "
                   f"{', '.join(m.name + '@' + m.version for m in served) or 'none'}  workers: {workers}", err=True)
        uvicorn.run(app, host=host, port=port, log_level="warning")
    except SystemExit as e:
        if e.code not in (128 + signal.SIGTERM, 128 + signal.SIGINT):
            raise
    finally:
        supervisor.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
