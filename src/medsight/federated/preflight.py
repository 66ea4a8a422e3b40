"""Pre-flight of one site before round 1: can it train and evaluate at all?

A site whose manifest cannot be read, has no row of its own, holds one class only, whose images cannot be read or
that is too small would otherwise be found out after the run (a NaN AUC beside a "global AUC 1.000", and the
untrained initial weights written as the model). The same check runs in two places: in the launcher, which has
every site's data path in a local federation (so ``medsight federated run`` stops before any process starts), and
in the ClientApp when the ServerApp asks before round 1 (a real remote site, whose data only it can read).

What is checked is the site's own engine task, set up exactly as round 1 would (every image read), then:
classification: both classes in the training rows and in the held-out rows; segmentation: every case has its
label map (the dataset validator) and some foreground among the training labels; MIL: slides with features and
both classes in training; all: at least ``min-site-rows`` training units (rows, cases, slides).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from medsight.engine.task import Task


def _classes(y: Any) -> set[int]:
    return {int(v >= 0.5) for v in np.asarray(y, dtype=float).ravel()}


def data_problem(task: Task, min_rows: int) -> str | None:
    """Why the set-up ``task`` cannot take part (one sentence), or None."""
    from medsight.federated.mil_site import MilSiteTask
    from medsight.federated.seg_site import SegSiteTask
    from medsight.federated.site import SiteTask

    n = int(task.n_train)
    if n < min_rows:
        return f"{n} training rows/cases/slides, fewer than the federation's minimum {min_rows} (min-site-rows)"
    if isinstance(task, SiteTask):
        x_tr, y_tr, x_te, y_te = task._data
        for part, y in (("training", y_tr), ("held-out", y_te)):
            if _classes(y.numpy()) != {0, 1}:
                return f"its {part} rows hold one class only ({sorted(_classes(y.numpy()))}); both are needed"
    elif isinstance(task, SegSiteTask):
        from medsight.io.nifti import read_nifti

        train = [c for c in task.ds.cases if c.case_id not in set(task.held)]
        if not any(np.any(read_nifti(c.label).array > 0) for c in train if c.label is not None):
            return "no training case has any labelled foreground"
    elif isinstance(task, MilSiteTask):
        labels = {int(b.label) for b in task.inner.train}
        if labels != {0, 1} or not task.inner.val:
            return "its slides with features need both classes in training and some held out"
    return None


def site_preflight(rc: Mapping[str, Any], nc: Mapping[str, Any]) -> tuple[Task | None, str | None]:
    """(the site's set-up task, None) when it can take part, else (None, why). Any failure to read the data is a
    reason, not a crash: the coordinator is told which site failed and why."""
    from medsight.federated.tasks import site_task

    try:
        task = site_task(rc, nc)
        task.setup()
        problem = data_problem(task, int(rc.get("min-site-rows", 4)))
    except Exception as err:  # noqa: BLE001 - whatever stops this site from reading its data is its reason
        text = str(err).splitlines()[0] if str(err) else ""
        return None, f"{type(err).__name__}: {text}" if not _is_user_error(err) else text
    return (task, None) if problem is None else (None, problem)


def _is_user_error(err: Exception) -> bool:
    from medsight.errors import MedsightError

    return isinstance(err, MedsightError)
