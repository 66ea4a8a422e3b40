"""A/B: test-time mirroring with every flip stacked into one network call vs one call per flip (docs/benchmarks.md
"predict", "Mirroring: one call per flip"). Same Predictor, same case, arms alternating; prints CPU / wall seconds
per run and the largest probability difference between the arms.

Run: python benchmarks/ab_mirror_calls.py MODEL_DIR DATA_DIR CASE_ID [RUNS]
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

import medsight.segmentation.predict as pr
from medsight.io.nifti import read_nifti
from medsight.segmentation.predict import Predictor
from medsight.segmentation.tta import _first, mirror_combinations, mirrored_softmax


def stacked(model, x: torch.Tensor, axes=(), combos=None) -> torch.Tensor:  # noqa: ANN001 - as mirrored_softmax
    """The former mirrored_softmax: all flips of the window batch through the network as one batch."""
    combos = list(combos) if combos is not None else mirror_combinations(axes)
    p = torch.softmax(_first(model(torch.cat([torch.flip(x, [a + 2 for a in c]) if c else x for c in combos]))), 1)
    b = x.shape[0]
    return sum(torch.flip(p[i * b:(i + 1) * b], [a + 2 for a in c]) if c else p[i * b:(i + 1) * b]
               for i, c in enumerate(combos)) / len(combos)


def main() -> None:
    torch.set_num_threads(1)
    model, data, cid = sys.argv[1:4]
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    predictor = Predictor(model)
    image = read_nifti(f"{data}/imagesTr/{cid}_0000.nii.gz")
    res: dict[str, list[tuple[float, float]]] = {"stacked": [], "per_flip": []}
    outs = {}
    for _ in range(runs):
        for name, fn in (("stacked", stacked), ("per_flip", mirrored_softmax)):
            pr.mirrored_softmax = fn
            c, w = time.process_time(), time.perf_counter()
            outs[name] = predictor.predict(image).probabilities
            res[name].append((round(time.process_time() - c, 2), round(time.perf_counter() - w, 2)))
    pr.mirrored_softmax = mirrored_softmax
    print("CPU s, wall s per run:", res)
    print("max abs probability difference:", float(np.abs(outs["stacked"] - outs["per_flip"]).max()))


if __name__ == "__main__":
    main()
