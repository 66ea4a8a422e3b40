"""Which packages the service serves by default: the newest approved version of each registered name; candidates
only when the operator allows them; never retired ones."""

from __future__ import annotations

import json

import pytest

from medsight.errors import ConfigError
from medsight.package import save_package
from medsight.package.registry import Registry
from medsight.serve.models import resolve_models


def _package(tmp_path, name: str, folder: str, content: str):
    src = tmp_path / f"src-{name}-{content}"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"content": content, "spatial_dims": 2}))
    return save_package(src, tmp_path / folder, task="classification", name=name)


def test_newest_approved_version_per_name_and_no_retired(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSIGHT_HOME", str(tmp_path / "home"))
    _package(tmp_path, "cls", "cls-pkg", "v1")
    v2 = _package(tmp_path, "cls", "cls-pkg", "v2")  # replaces v1 in the same folder: v1 no longer verifies there
    other = _package(tmp_path, "other", "other-pkg", "x")
    assert resolve_models([]) == []  # nothing approved yet: candidates are not served
    assert [(m.name, m.package_id) for m in resolve_models([], allow_candidates=True)] == [("cls", v2.id),
                                                                                          ("other", other.id)]
    with pytest.raises(ConfigError, match="candidate; only approved"):
        resolve_models([str(other.path)])
    reg = Registry()
    reg.set_status("cls", v2.version, "approved")
    reg.set_status("other", other.version, "approved")
    served = resolve_models([])
    assert [(m.name, m.package_id) for m in served] == [("cls", v2.id), ("other", other.id)]
    assert served[0].input["dims"] == 2  # the classifier's config says 2D: it is routed 2D images only
    reg.set_status("other", other.version, "retired")
    assert [m.name for m in resolve_models([])] == ["cls"]
