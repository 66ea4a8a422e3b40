"""The HTML page: every tagged number equals the JSON, too-small groups say so, no network, opens in Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from medsight.report.html import write_report
from medsight.report.results import ValidationResults, resolve


class _Collect(HTMLParser):
    """Collects (data-json path, text), data-too-few texts, img srcs and every src/href value."""

    def __init__(self) -> None:
        super().__init__()
        self.nums: list[tuple[str, str]] = []
        self.too_few: list[tuple[str, str]] = []
        self.links: list[str] = []
        self.imgs: list[str] = []
        self._open: tuple[str, str] | None = None
        self._buf = ""

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        for k in ("src", "href"):
            if k in a:
                self.links.append(a[k])
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        for k in ("data-json", "data-too-few"):
            if k in a:
                self._open, self._buf = (k, a[k]), ""

    def handle_data(self, data: str) -> None:
        if self._open:
            self._buf += data

    def handle_endtag(self, tag: str) -> None:
        if self._open and tag == "span":
            kind, path = self._open
            (self.nums if kind == "data-json" else self.too_few).append((path, self._buf.strip()))
            self._open = None


@pytest.fixture(scope="module")
def report(results: ValidationResults, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_report(results, tmp_path_factory.mktemp("rep") / "report.html")


def _parsed(html: Path) -> _Collect:
    c = _Collect()
    c.feed(html.read_text())
    return c


def test_every_number_equals_the_json(report: tuple[Path, Path]) -> None:
    html, js = report
    doc = json.loads(js.read_text())
    c = _parsed(html)
    assert len(c.nums) > 60
    for path, text in c.nums:
        v = resolve(doc, path)
        if v is None:
            assert text == "n/a", path
        elif isinstance(v, int):
            assert int(text) == v, path
        else:
            assert float(text) == pytest.approx(round(v, 3), abs=5e-4), path
    # the headline numbers are in the page, not only some of them
    shown = {p for p, _ in c.nums}
    for i, coh in enumerate(doc["classification"]["cohorts"]):
        assert f"classification.cohorts.{i}.auc.value" in shown
    for i, coh in enumerate(doc["segmentation"]["cohorts"]):
        for lab in coh["dice"]:
            assert f"segmentation.cohorts.{i}.dice.{lab}.value" in shown
    # no unlabelled decimals in the tables' cells: every 0.xxx in the body text sits in a tagged span
    body = re.sub(r'src="data:[^"]*"', "", html.read_text())
    body = re.sub(r"<script>.*?</script>", "", body, flags=re.S)
    untagged = re.findall(r">[^<]*?\b\d\.\d{3}\b[^<]*<", re.sub(r'<span class="(num|txt)"[^>]*>[^<]*</span>', "", body))
    assert not untagged


def test_small_subgroup_shows_too_few_cases(report: tuple[Path, Path]) -> None:
    html, js = report
    doc = json.loads(js.read_text())
    c = _parsed(html)
    flagged = {p for p, text in c.too_few if text == "too few cases"}
    expect = {f"{sec}.subgroups.{i}" for sec in ("classification", "segmentation")
              for i, r in enumerate(doc[sec]["subgroups"]) if r["too_few"]}
    assert "classification.subgroups.3" in expect or expect  # site_D (4 cases) is among them
    assert flagged == expect
    assert any(doc["classification"]["subgroups"][int(p.split(".")[-1])]["group"] == "site_D"
               for p in expect if p.startswith("classification"))


def test_self_contained(report: tuple[Path, Path]) -> None:
    html, _ = report
    c = _parsed(html)
    assert all(not re.match(r"\s*(https?:)?//", u) for u in c.links), [u for u in c.links if "//" in u[:8]]
    assert all(s.startswith("data:image/png;base64,") for s in c.imgs)
    assert len(c.imgs) >= 8
    assert "default-src 'none'" in html.read_text()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(html: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-dev-shm-usage",
                           "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp / 'profile'}",
                           "--virtual-time-budget=5000", *extra, html.as_uri()],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.requires_tool("chromium", "chromium-browser", why="apt-get install chromium (.ci/run does)")
def test_opens_in_headless_chromium(report: tuple[Path, Path], tmp_path: Path) -> None:
    html, _ = report
    dom = _chromium(html, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    m = re.search(r'data-image-widths="([\d,]*)"', dom.stdout)
    assert m, "the page's load hook did not run"
    widths = [int(w) for w in m.group(1).split(",") if w]
    assert len(widths) == len(_parsed(html).imgs) and min(widths) > 0
    assert re.search(r'data-resources="0"', dom.stdout)
    console = [ln for ln in dom.stderr.splitlines() if "CONSOLE" in ln or "Refused to" in ln]
    assert not console, console
    shot = tmp_path / "shot.png"
    r = _chromium(html, tmp_path, f"--screenshot={shot}", "--window-size=1200,1600")
    assert r.returncode == 0 and shot.stat().st_size > 10_000
