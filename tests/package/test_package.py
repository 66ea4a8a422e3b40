"""save_package / load_package: hashes against hashlib, the id against a hand-built canonical JSON, refusal of
changed, missing and unlisted files, atomic replacement, derived versions."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import medsight
from medsight.errors import ConfigError
from medsight.files import sha256_file
from medsight.package import PackageError, derive_package, load_package, save_package
from medsight.package import package as package_module


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "trained"
    (d / "fold_0").mkdir(parents=True)
    (d / "fold_0" / "model_final.pt").write_bytes(bytes(range(256)) * 40)
    (d / "plan.json").write_text(json.dumps({"patch_size": [64, 64, 64]}))
    return d


def test_manifest_lists_every_file_with_its_sha256_and_the_id_hashes_the_manifest(src: Path, tmp_path: Path) -> None:
    pkg = save_package(src, tmp_path / "pkg", task="segmentation", name="brain", extra={"metrics": {"dice": 0.8}})
    m = json.loads((tmp_path / "pkg" / "manifest.json").read_text())
    assert set(m["files"]) == {"fold_0/model_final.pt", "plan.json"}
    for rel in m["files"]:
        assert m["files"][rel]["sha256"] == hashlib.sha256((src / rel).read_bytes()).hexdigest()
        assert m["files"][rel]["bytes"] == (src / rel).stat().st_size
    body = {k: v for k, v in m.items() if k not in ("id", "created_at")}
    expected = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert pkg.id == m["id"] == expected
    assert (m["task"], m["name"], m["medsight_version"], m["parent_id"]) == ("segmentation", "brain",
                                                                             medsight.__version__, None)
    assert pkg.version == 1 and pkg.status == "candidate"
    loaded = load_package(tmp_path / "pkg")
    assert loaded.id == pkg.id and loaded.file("plan.json").read_text() == (src / "plan.json").read_text()
    with pytest.raises(PackageError, match="has no file calibration.json"):
        loaded.file("calibration.json")
    # same content saved again: same id (created_at is not hashed), same registry version
    again = save_package(src, tmp_path / "pkg2", task="segmentation", name="brain", extra={"metrics": {"dice": 0.8}})
    assert again.id == pkg.id and again.version == 1


@pytest.mark.parametrize("tamper, words", [
    (lambda p: (p / "fold_0" / "model_final.pt").write_bytes(b"\xff" + (p / "fold_0" / "model_final.pt").read_bytes()[1:]),
     "package file fold_0/model_final.pt was changed"),
    (lambda p: (p / "plan.json").unlink(), "package file plan.json is missing"),
    (lambda p: (p / "calibration.json").write_text("{}"), "unlisted file calibration.json"),
    (lambda p: (p / "fold_0" / "extra.pt").write_bytes(b"x"), "unlisted file fold_0/extra.pt"),
    (lambda p: (p / "manifest.json").write_text((p / "manifest.json").read_text().replace('"brain"', '"brian"')),
     "manifest.json was edited"),
])
def test_any_change_is_refused_with_one_line_naming_the_file(src: Path, tmp_path: Path, tamper, words: str) -> None:
    save_package(src, tmp_path / "pkg", task="segmentation", name="brain")
    tamper(tmp_path / "pkg")
    with pytest.raises(PackageError, match=words) as err:
        load_package(tmp_path / "pkg")
    assert "\n" not in str(err.value)


def test_not_a_package(tmp_path: Path, src: Path) -> None:
    with pytest.raises(PackageError, match="not a model package"):
        load_package(src)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a model package; choose another output folder"):
        save_package(src, tmp_path / "other", task="segmentation", name="brain")
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_a_crash_while_writing_leaves_the_old_package_whole(src: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    old = save_package(src, tmp_path / "pkg", task="segmentation", name="brain")
    (src / "plan.json").write_text('{"patch_size": [32, 32, 32]}')

    def crash(*args, **kwargs):
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(package_module, "_publish", crash)
        with pytest.raises(OSError, match="disk full"):
            save_package(src, tmp_path / "pkg", task="segmentation", name="brain")
    assert load_package(tmp_path / "pkg").id == old.id
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left behind
    new = save_package(src, tmp_path / "pkg", task="segmentation", name="brain")
    assert new.id != old.id and new.version == 2 and load_package(tmp_path / "pkg").id == new.id
    assert json.loads((tmp_path / "pkg" / "plan.json").read_text())["patch_size"] == [32, 32, 32]


def test_exchange_is_atomic_rename(tmp_path: Path) -> None:
    """The swap primitive itself: both paths keep existing, contents exchanged (Linux renameat2)."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("A")
    (b / "x").write_text("B")
    if not package_module._exchange(a, b):
        pytest.skip("renameat2(RENAME_EXCHANGE) not supported here; the two-rename fallback is used")
    assert ((a / "x").read_text(), (b / "x").read_text()) == ("B", "A")


def test_derived_version_gets_its_own_folder_and_the_parent_still_loads(src: Path, tmp_path: Path) -> None:
    parent = save_package(src, tmp_path / "pkg", task="segmentation", name="brain")
    before = {p.name: sha256_file(p) for p in (tmp_path / "pkg").rglob("*") if p.is_file()}
    child = derive_package(parent, files={"calibration.json": b'{"t": 2.0}'}, extra={"calibration": "temperature"})
    assert child.parent_id == parent.id and child.version == 2 and child.has("calibration.json")
    assert child.path == (tmp_path / f"pkg-{child.id[:12]}").resolve()  # content-addressed, beside the parent
    assert load_package("brain").id == child.id == load_package("brain@2").id
    assert load_package("brain@1").id == parent.id  # the registered version never changed on disk
    assert {p.name: sha256_file(p) for p in (tmp_path / "pkg").rglob("*") if p.is_file()} == before
    grandchild = derive_package(child, files={"x.json": b"{}"})  # names do not nest: pkg-<id12>, not pkg-a-b
    assert grandchild.path.name == f"pkg-{grandchild.id[:12]}" and grandchild.parent_id == child.id
    with pytest.raises(ConfigError, match="its own folder"):
        derive_package(parent, files={"y.json": b"{}"}, dest_dir=tmp_path / "pkg")


def test_saving_over_a_registered_version_keeps_it_loadable(src: Path, tmp_path: Path) -> None:
    """Retraining into the same --out: the folder gets the new package, the registered one keeps its bytes
    (copied to pkg.versions/<id12>, the registry row follows), so NAME@1 still loads and verifies."""
    old = save_package(src, tmp_path / "pkg", task="segmentation", name="brain")
    (src / "plan.json").write_text('{"patch_size": [8, 8, 8]}')
    new = save_package(src, tmp_path / "pkg", task="segmentation", name="brain")
    assert load_package(tmp_path / "pkg").id == new.id and new.version == 2
    kept = load_package("brain@1")
    assert kept.id == old.id and kept.path == (tmp_path / "pkg.versions" / old.id[:12]).resolve()
    assert json.loads(kept.file("plan.json").read_text()) != {"patch_size": [8, 8, 8]}


def test_saving_the_same_content_again_keeps_no_copy(src: Path, tmp_path: Path) -> None:
    """A rerun that writes identical content (same id) neither archives nor registers anything new."""
    first = save_package(src, tmp_path / "pkg", task="segmentation", name="brain")
    again = save_package(src, tmp_path / "pkg", task="segmentation", name="brain")
    assert again.id == first.id and again.version == first.version == 1
    assert not (tmp_path / "pkg.versions").exists()
