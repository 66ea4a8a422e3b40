"""One torch thread and a private MEDSIGHT_HOME for every pretraining test (registered packages stay in tmp)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    torch.set_num_threads(1)
    monkeypatch.setenv("MEDSIGHT_HOME", str(tmp_path / "home"))
