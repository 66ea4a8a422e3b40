"""A planted-identifier corpus from pydicom's own DICOM files, built once per test session."""

from __future__ import annotations

import pytest

from medsight.synthetic.phi_corpus import build_corpus


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    return build_corpus(tmp_path_factory.mktemp("deid") / "in", n_files=30, files_per_study=3,
                        studies_per_patient=2, include_flagged=True)


@pytest.fixture(scope="session")
def key_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("key") / "deid.key"
    path.write_bytes(bytes(range(7, 39)))  # 32 fixed bytes
    return path
