"""CPU latency of exported models: PyTorch vs onnxruntime (fp32) vs onnxruntime with int8 dynamic quantisation.

Takes model packages (default: the demo's classifier and segmentation packages under medsight-out/demo), exports
each with the same code as ``medsight export``, and times one forward pass per call (batch 1, the edge use:
one slice for the classifier, one patch for the segmentation network) on real inputs: the classifier's validation
images recorded in its package, and patches of the segmentation package's training images. Each engine gets
the same thread count. Accuracy change of int8: the largest logit difference against PyTorch, and for the
classifier the share of validation decisions (stored thresholds, calibration applied) that stay the same.

    nice -n 10 python benchmarks/bench_export.py [--classifier PKG] [--segmentation PKG] [--repeats 30]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import machine_line, median, record_section  # noqa: E402

from medsight.cli.export import classifier_for_export, segmenter_for_export  # noqa: E402
from medsight.package.export import export_onnx, onnx_session, quantize_int8  # noqa: E402
from medsight.package.package import load_package  # noqa: E402


def _time(fn, x: np.ndarray, repeats: int) -> list[float]:
    fn(x)  # warm-up
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(x)
        out.append((time.perf_counter() - t) * 1000)
    return out


def classifier_inputs(pkg, bundle) -> tuple[torch.Tensor, np.ndarray]:  # noqa: ANN001
    from medsight.classification.dataset import load_tensors
    from medsight.classification.manifest import read_manifest

    cfg = bundle.config
    manifest = read_manifest(cfg["data"]["manifest"], cfg.get("label_columns"), cfg.get("task"))
    rows = [int(r) for r in pkg.read_json("validation_predictions.json")["rows"]]
    idx = [i for i in range(len(manifest.patients)) if int(manifest.row_number(i)) in set(rows)]
    return load_tensors([manifest.image_paths[i] for i in idx], cfg["input_size"], quiet=True), np.asarray(manifest.y)[idx]


def seg_inputs(pkg, data: Path, shape: list[int], n: int) -> torch.Tensor:  # noqa: ANN001
    from medsight.data.dataset import load_dataset
    from medsight.data.preprocess import preprocess_image
    from medsight.io import read_image
    from medsight.segmentation.ensemble import load_models

    plan, cfg, _ = load_models(pkg.path)
    ds = load_dataset(data)
    out = []
    for case in ds.cases[:n]:
        pre = preprocess_image(read_image(case.images[0]), plan, cfg)
        img = torch.from_numpy(pre.image).float()
        x = torch.zeros(img.shape[0], *shape)
        sl = tuple(slice(0, min(a, b)) for a, b in zip(shape, img.shape[1:]))
        x[(slice(None), *sl)] = img[(slice(None), *sl)]
        out.append(x)
    return torch.stack(out)


def bench(kind: str, pkg, model, example, meta, inputs: torch.Tensor, repeats: int, threads: int,  # noqa: ANN001
          tmp: Path) -> dict:
    onnx = tmp / f"{kind}.onnx"
    export_onnx(model, example, onnx, meta)
    q = quantize_int8(onnx, tmp / f"{kind}.int8.onnx")
    torch.set_num_threads(threads)
    s32, s8 = onnx_session(onnx, threads), onnx_session(q, threads)
    model.eval()
    x1 = inputs[:1].numpy()
    with torch.no_grad():
        t_torch = _time(lambda a: model(torch.from_numpy(a)), x1, repeats)
    t_ort = _time(lambda a: s32.run(None, {"input": a}), x1, repeats)
    t_q = _time(lambda a: s8.run(None, {"input": a}), x1, repeats)
    with torch.no_grad():
        ref = np.concatenate([np.asarray(model(inputs[i:i + 1]))  for i in range(len(inputs))])
    o32 = np.concatenate([s32.run(None, {"input": inputs[i:i + 1].numpy()})[0] for i in range(len(inputs))])
    o8 = np.concatenate([s8.run(None, {"input": inputs[i:i + 1].numpy()})[0] for i in range(len(inputs))])
    return {"torch_ms": t_torch, "ort_ms": t_ort, "int8_ms": t_q, "n_inputs": len(inputs), "ref": ref,
            "fp32_diff": float(np.abs(o32 - ref).max()), "int8_diff": float(np.abs(o8 - ref).max()), "o8": o8,
            "input_shape": list(example.shape[1:]), "onnx_kb": onnx.stat().st_size // 1024,
            "int8_kb": q.stat().st_size // 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--classifier", default="medsight-out/demo/classification/model")
    ap.add_argument("--segmentation", default="medsight-out/demo/segmentation/model")
    ap.add_argument("--seg-data", default=None, help="dataset of the segmentation inputs (default: the demo's data "
                                                     "folder two levels above the package)")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-record", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = ap.parse_args()
    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        cls_pkg = load_package(args.classifier, allow_retired=True)
        model, example, meta = classifier_for_export(cls_pkg)
        from medsight.classification.model_io import load_classifier

        bundle = load_classifier(cls_pkg)
        x, y = classifier_inputs(cls_pkg, bundle)
        r = bench("classifier", cls_pkg, model, example, meta, x, args.repeats, args.threads, Path(tmp))
        th = np.asarray([bundle.thresholds.get(n, 0.5) for n in bundle.labels])
        def decide(z):  # noqa: ANN001, ANN202
            return bundle.probabilities(bundle.calibration.apply(z) if bundle.calibration else z) >= th
        agree = float(np.mean(decide(r["ref"]) == decide(r["o8"])))
        rows.append(("classifier " + bundle.config["backbone"], r))
        notes.append(f"classifier: int8 decisions equal to fp32 on {agree:.1%} of {r['n_inputs']} validation "
                     f"images x {len(bundle.labels)} labels")
        seg_pkg = load_package(args.segmentation, allow_retired=True)
        model, example, meta = segmenter_for_export(seg_pkg, None)
        data = Path(args.seg_data) if args.seg_data else Path(seg_pkg.path).parents[1] / "data"
        xs = seg_inputs(seg_pkg, data, list(example.shape[2:]), 3)
        r = bench("segmentation", seg_pkg, model, example, meta, xs, max(5, args.repeats // 3), args.threads, Path(tmp))
        agree = float(np.mean(r["ref"].argmax(1) == r["o8"].argmax(1)))
        rows.append(("segmentation DynUNet", r))
        notes.append(f"segmentation: int8 voxel labels (argmax) equal to fp32 on {agree:.2%} of voxels of "
                     f"{r['n_inputs']} patches")
    lines = ["## Export: PyTorch vs onnxruntime on CPU", "", machine_line(),
             f"Command: `nice -n 10 python benchmarks/bench_export.py --repeats {args.repeats} --threads {args.threads}` "
             "(packages from `medsight demo --fast`). Timings were taken on a shared, loaded 2-core machine (other "
             "engineers' jobs running): compare the ratios within a row, not the absolute times.",
             f"Latency of one forward pass, batch 1, {args.threads} thread(s) per engine, median (min-max) of n "
             "calls after one warm-up; int8 = onnxruntime dynamic quantisation of the weights.", "",
             "| model | input | n | torch ms | onnxruntime ms | int8 ms | torch/ort | max abs diff fp32 | max abs diff int8 |"
             " ONNX KiB fp32 / int8 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows:
        def fmt(v):  # noqa: ANN001, ANN202
            return f"{median(v):.2f} ({min(v):.2f}-{max(v):.2f})"
        lines.append(f"| {name} | {'x'.join(map(str, r['input_shape']))} | {len(r['torch_ms'])} | {fmt(r['torch_ms'])} | "
                     f"{fmt(r['ort_ms'])} | {fmt(r['int8_ms'])} | {median(r['torch_ms']) / median(r['ort_ms']):.2f} | "
                     f"{r['fp32_diff']:.1e} | {r['int8_diff']:.2e} | {r['onnx_kb']} / {r['int8_kb']} |")
    notes.append("int8 figures are for information: judge speed and agreement per machine before deploying one")
    lines += ["", *[f"- {n}" for n in notes]]
    text = "\n".join(lines)
    print(text)
    if not args.no_record:
        record_section("export", text)


if __name__ == "__main__":
    main()
