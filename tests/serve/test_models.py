"""Which packages the service serves by default: the newest non-retired version of each registered name."""

from __future__ import annotations

import json

from medsight.package import save_package
from medsight.package.registry import Registry
from medsight.serve.models import resolve_models


def _package(tmp_path, name: str, folder: str, content: str):
    src = tmp_path / f"src-{name}-{content}"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"content": content}))
    return save_package(src, tmp_path / folder, task="classification", name=name)


def test_newest_version_per_name_and_no_retired(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSIGHT_HOME", str(tmp_path / "home"))
    _package(tmp_path, "cls", "cls-pkg", "v1")
    v2 = _package(tmp_path, "cls", "cls-pkg", "v2")  # replaces v1 in the same folder: v1 no longer verifies there
    other = _package(tmp_path, "other", "other-pkg", "x")
    served = resolve_models([])
    assert [(m.name, m.package_id) for m in served] == [("cls", v2.id), ("other", other.id)]
    Registry().set_status("other", other.version, "retired")
    assert [m.name for m in resolve_models([])] == ["cls"]
