"""Which verified model packages the service runs: the ones named on the command line, or the newest registered
version of every package name in the registry ($MEDSIGHT_HOME). Only ``approved`` versions are served unless the
operator says otherwise (``--allow-candidates``): a candidate is not yet fit for patients."""

from __future__ import annotations

from medsight.errors import ConfigError
from medsight.serve.routing import spec_for_package
from medsight.serve.runner import ModelRef

SERVABLE_TASKS = ("segmentation", "classification")


def _ref(pkg) -> ModelRef:  # noqa: ANN001 - medsight.package.Package
    if pkg.task not in SERVABLE_TASKS:
        raise ConfigError(f"package {pkg.label} is a {pkg.task} model; the service runs {' and '.join(SERVABLE_TASKS)}"
                          " models")
    version = str(pkg.version) if pkg.version is not None else pkg.id[:12]
    return ModelRef(pkg.name, version, pkg.id, pkg.task, pkg.path, spec_for_package(pkg).to_dict())


def _statuses(allow_candidates: bool) -> tuple[str, ...]:
    return ("approved", "candidate") if allow_candidates else ("approved",)


def resolve_models(refs: list[str], allow_candidates: bool = False) -> list[ModelRef]:
    """Verify every package (each file re-hashed) and describe it; refuses retired and (by default) unapproved."""
    from medsight.package import load_package
    from medsight.package.registry import Registry

    ok = _statuses(allow_candidates)
    if refs:
        served = []
        for r in refs:
            pkg = load_package(r)
            status = pkg.status or "unregistered"
            if status not in ok:
                raise ConfigError(f"package {pkg.label} is {status}; only approved versions are served (`medsight "
                                  f"models promote {pkg.name}@{pkg.version}`), or start with --allow-candidates "
                                  "for a trial")
            served.append(_ref(pkg))
        return served
    newest: dict[str, object] = {}  # a package's folder holds its newest version; older ones are superseded
    for rec in Registry().list():
        if rec.status in ok and rec.task in SERVABLE_TASKS:
            if rec.name not in newest or rec.version > newest[rec.name].version:
                newest[rec.name] = rec
    return [_ref(load_package(rec.ref)) for rec in sorted(newest.values(), key=lambda r: r.name)]


def verify_model(ref: ModelRef) -> ModelRef:
    """Re-verify a served package before a job runs it (a file changed since start-up stops the job)."""
    from medsight.package import load_package

    pkg = load_package(ref.path)
    if pkg.id != ref.package_id:
        raise ConfigError(f"served package {ref.name}@{ref.version} changed on disk since the service started; "
                          "restart the service")
    return ref
