"""``medsight calibrate``: calibration, operating points and referral rule for any classifier package."""

from __future__ import annotations

from pathlib import Path

import click

from medsight.cli.audited import audited, current_event


@click.command("calibrate")
@click.argument("model", metavar="PACKAGE")
@click.argument("data", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Folder of the new (derived) package version; PACKAGE itself is never modified.")
@click.option("--method", type=click.Choice(["temperature", "vector"]), default="temperature", show_default=True,
              help="temperature: one T per label (sigmoid) or for all classes (softmax); vector: per-class scale "
                   "and bias (multi-class softmax only).")
@click.option("--target-sensitivity", type=float, default=None,
              help="Operating point target, re-derived on the calibrated probabilities (default: the package's).")
@click.option("--check-share", type=float, default=0.5, show_default=True,
              help="Share of DATA's patients kept apart to measure ECE/Brier before and after (nothing is fitted "
                   "on them).")
@click.option("--target-keep", type=float, default=0.95, show_default=True,
              help="Share of calibration cases the referral rule keeps (confidence + OOD).")
@click.option("--unit", default="image", show_default=True, help="What one row of DATA is (image, slice, scan...).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the patient split of DATA.")
@audited("calibrate", inputs=("data",), outputs=("out_dir",))
def calibrate(model: str, data: Path, out_dir: Path, method: str, target_sensitivity: float | None,
              check_share: float, target_keep: float, unit: str, seed: int) -> None:
    """Calibrate PACKAGE (a classifier package folder or registered NAME[@VERSION]) on DATA, a manifest CSV
    (image, patient_id, site, label columns) of patients the model never saw: neither training nor the
    validation patients that chose its epoch (refused otherwise).

    DATA is split by patient: the calibration part fits the temperature (or vector) scaling, re-derives each
    label's threshold on the calibrated probabilities for the target sensitivity, and fits the referral rule; the
    check part measures ECE and Brier before and after. The result is a new package version at --out (parent
    recorded) with calibration.json, thresholds in config.json, referral.json, ood_mahalanobis.json and
    calibration_report.json.
    """
    from medsight.package.package import load_package
    from medsight.safety.calibrate_package import calibrate_classifier

    pkg = load_package(model)
    current_event().package(pkg)
    new, rep = calibrate_classifier(pkg, data, out_dir, method=method, target_sensitivity=target_sensitivity,
                                    check_share=check_share, seed=seed, target_keep=target_keep, unit=unit)
    current_event().package(new).note(parent=pkg.label, calibrated=new.label)
    sp = rep["splits"]
    for name in ("calibration_split", "check_split"):
        b, a = rep[name]["before"], rep[name]["after"]
        n = sp[name.removesuffix("_split")]
        click.echo(f"{name.replace('_', ' ')} (n={n['n']} {unit}s, {n['patients']} patients): ECE {b['ece']:.4f} -> "
                   f"{a['ece']:.4f}, Brier {b['brier']:.4f} -> {a['brier']:.4f}")
    th = ", ".join(f"{k} {v:.4f}" for k, v in (rep.get("thresholds") or {}).items())
    if th:
        click.echo(f"thresholds (sensitivity >= {rep['target_sensitivity']:g} on calibrated probabilities): {th}")
    click.echo(f"new version {new.label} (id {new.id[:12]}, parent {pkg.label}) at {new.path}")
