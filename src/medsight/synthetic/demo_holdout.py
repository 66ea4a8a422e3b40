"""The demo dataset's held-out test cohort: extra cases of the training sites that no fold ever sees.

A cross-validation fold's validation cases pick the checkpoint and fit rules (e.g. the lesion detection rule), so
figures measured on them are optimistic. These cases are planned **after** the ordinary plan, on their own random
stream and with new patient numbers, so the plan's cases (and their seeds, hence their files) stay exactly those of
a build without a test cohort: the training set, and so the trained model, do not change. Each test patient has
one scan; a fixed ``round(lesion_share * n_test)`` of them carry a lesion (a stratified test set, so that every
seed gives the same number of lesion cases to measure lesion-wise sensitivity on). The manifest marks them
``split = test``; ``medsight.data.splits.dataset_folds`` keeps such cases out of every fold.
"""

from __future__ import annotations

import numpy as np

from medsight.errors import DatasetError
from medsight.synthetic.demo import SITES, TRAINING_SITES, LesionProfile, _CaseSpec

TEST_SPLIT = "test"  # the manifest's ``split`` value of a held-out test case (medsight.data.manifest.SPLITS)


def plan_test_cases(planned: list[_CaseSpec], n_test: int, seed: int, lesion_share: float,
                    lesion: LesionProfile) -> list[_CaseSpec]:
    """``n_test`` cases of the training sites (in their site shares) after ``planned``: new patients, one scan each."""
    if n_test < 0:
        raise DatasetError(f"the number of held-out test cases must be >= 0, got {n_test}")
    if n_test == 0:
        return []
    rng = np.random.default_rng([seed, 7, 1])  # not the plan's stream ([seed, 7]): its draws stay as they were
    sites = [s for s in SITES if s.name in TRAINING_SITES]
    total = sum(s.share for s in sites)
    counts = [int(round(s.share / total * n_test)) for s in sites]
    counts[0] += n_test - sum(counts)
    n_lesion = int(round(lesion_share * n_test))
    has_lesion = rng.permutation(np.arange(n_test) < n_lesion)
    patient_no = len({s.patient_id for s in planned})  # the plan numbers its patients 1..N
    specs: list[_CaseSpec] = []
    for site, count in zip(sites, counts):
        for _ in range(count):
            patient_no += 1
            case_no = len(planned) + len(specs)
            sex = "F" if rng.random() < 0.5 else "M"
            age = int(rng.integers(22, 86))
            specs.append(_CaseSpec(f"demo_{case_no:03d}", f"P{patient_no:04d}", site, (seed, 11, patient_no),
                                   (seed, 13, case_no), sex, age, bool(has_lesion[len(specs)]), lesion))
    return specs
