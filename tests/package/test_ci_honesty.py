"""require_tool / require_service: skip locally, fail under CI (so a broken apt-get cannot switch tests off)."""

from __future__ import annotations

import pytest


def test_missing_tool_skips_locally_and_fails_in_ci(require_tool, require_service,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-such-tool-h13 not found"):
        require_tool("no-such-tool-h13")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required in CI but unavailable: no-such-tool-h13"):
        require_tool("no-such-tool-h13")
    with pytest.raises(pytest.fail.Exception, match="PostgreSQL did not start"):
        require_service("PostgreSQL did not start")
    assert require_tool("no-such-tool-h13", "sh").endswith("/sh")  # the first one found is returned
