"""One run of the demo segmentation stage with one recipe lever changed (docs/benchmarks.md "Tissue Dice levers").

The run is the robustness benchmark's ``seg_run`` (benchmarks/_robustness_seg.py: the demo's own stage, no training
budget, the demo's data of seed 0 under WORK/seg_data, built on first use); the lever comes from the environment so
that the stage's code stays as the demo runs it:

    S33_MEM (planner memory GB -> patch), S33_EPOCHS, S33_ITERS, S33_LOSS (a medsight.losses name, e.g.
    dice_ce_lesion_head: the separate lesion head, whose network the trainer and predict build composed),
    S33_FG (foreground-centred share), S33_PATCH (e.g. 48x64x64), S33_BATCH, S33_LR, S33_DS (deep supervision 0/1),
    S33_NOCLS=1 (no class-first lesion sampling), S33_TISSUE_UNWEIGHTED=1 (CE class weights on lesion labels only),
    S33_CE_PER_VOXEL=1 (weighted CE divided by the voxel count, not by the sum of the weights),
    S33_LESION_WEIGHT (the lesion term's weight of S33_LOSS=dice_ce_lesion_region),
    S33_TISSUE_WEIGHTED=1 (that loss's tissue CE with dice_inverse_ce's inverse-frequency class weights),
    S33_HEAD_LESION_WEIGHT (the lesion term's weight of S33_LOSS=dice_ce_lesion_head)

    OMP_NUM_THREADS=1 S33_MEM=0.5 S33_EPOCHS=20 python benchmarks/probe_seg_recipe.py --work WORK --name p48 --seed 0

writes WORK/NAME/seg_s{seed}_t1/result.json (the benchmark's keys plus the recipe).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import medsight.plan.planner as planner  # noqa: E402
import medsight.segmentation.losses as losses  # noqa: E402
from _robustness_seg import build_seg_data, seg_run  # noqa: E402
from medsight.demo import segmentation as stage  # noqa: E402

E = os.environ


def _patch_stage() -> None:
    for key, attr, cast in (("S33_MEM", "MEMORY_GB", float), ("S33_EPOCHS", "EPOCHS", int),
                            ("S33_ITERS", "ITERATIONS", int), ("S33_LOSS", "LOSS", str)):
        if key in E:
            setattr(stage, attr, cast(E[key]))
    real_plan = planner.make_plan

    def make_plan(*a, **kw):  # the stage imports make_plan at call time
        p = real_plan(*a, **kw)
        c = p.config("3d")
        if "S33_FG" in E:
            c.foreground_oversample = float(E["S33_FG"])
        if "S33_PATCH" in E:
            c.patch_size = [int(v) for v in E["S33_PATCH"].split("x")]
        if "S33_BATCH" in E:
            c.batch_size = int(E["S33_BATCH"])
        if "S33_LR" in E:
            c.learning_rate = float(E["S33_LR"])
        if E.get("S33_NOCLS") == "1":
            c.class_sampling = {}
        if "S33_DS" in E:
            c.deep_supervision = E["S33_DS"] == "1"
        return p

    planner.make_plan = make_plan
    region_options: dict = {}
    if "S33_LESION_WEIGHT" in E:
        region_options["lesion_weight"] = float(E["S33_LESION_WEIGHT"])
    if E.get("S33_TISSUE_WEIGHTED") == "1":
        region_options["tissue_weighted"] = True
    if region_options:  # the registry looks the factory up by name when the trainer builds the loss
        region = losses.dice_ce_lesion_region
        losses.dice_ce_lesion_region = lambda **o: region(**{**region_options, **o})
    if "S33_HEAD_LESION_WEIGHT" in E:  # the lesion term's weight of S33_LOSS=dice_ce_lesion_head
        import medsight.segmentation.lesion_head as head

        weight, head_factory = float(E["S33_HEAD_LESION_WEIGHT"]), head.dice_ce_lesion_head
        head.dice_ce_lesion_head = lambda **o: head_factory(**{"lesion_weight": weight, **o})
    if E.get("S33_TISSUE_UNWEIGHTED") == "1" or E.get("S33_CE_PER_VOXEL") == "1":
        _lesion_only_class_weights(tissue_weighted=E.get("S33_TISSUE_UNWEIGHTED") != "1",
                                   per_voxel=E.get("S33_CE_PER_VOXEL") == "1")


def _lesion_only_class_weights(tissue_weighted: bool, per_voxel: bool) -> None:
    """Inverse-frequency CE weights on the plan's lesion labels only (the other classes weigh 1) unless
    ``tissue_weighted``; ``per_voxel``: the weighted CE is divided by the voxel count (the heavy lesion voxels then
    add to the tissue voxels' gradient instead of diluting it)."""
    import torch
    import torch.nn.functional as F

    def _balanced(self, output, target):
        t = target[:, 0].long()
        n = torch.bincount(t.reshape(-1), minlength=output.shape[1]).to(output.dtype)
        f = n / n.sum()
        w = torch.where(n > 0, (f.max() / f.clamp_min(1e-12)).pow(self.weight_power).clamp(1.0, self.max_weight),
                        torch.ones_like(f))
        keep = torch.zeros_like(w, dtype=torch.bool)
        for c in self.component_classes or ():
            keep[c] = True
        if not tissue_weighted:
            w = torch.where(keep, w, torch.ones_like(w))
        if self.lesion_share <= 0:
            return self.dice(output, target) + F.cross_entropy(output, t, weight=w)
        vw = self._component_weights(target, t, w)
        ce = F.cross_entropy(output, t, reduction="none")
        return self.dice(output, target) + (ce * vw).sum() / (vw.numel() if per_voxel else vw.sum())

    losses.DeepSupervisionLoss._balanced = _balanced


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    _patch_stage()
    build_seg_data(a.work)
    out = a.work / a.name / f"seg_s{a.seed}_t1"
    r = seg_run(a.work, out, a.seed, int(E.get("OMP_NUM_THREADS", 1)))
    r["recipe"] = {k: v for k, v in E.items() if k.startswith("S33_")}
    (out / "result.json").write_text(json.dumps(r))
    print(json.dumps(r))


if __name__ == "__main__":
    main()
