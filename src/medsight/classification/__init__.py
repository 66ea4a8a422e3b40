"""Image classification: manifest -> trained, thresholded model directory -> predictions with Grad-CAM evidence.

The CLASSIFIER contract other layers code against: ``load_classifier(model_dir) -> ClassifierBundle`` with
``.model``, ``.config``, ``.preprocess(image)`` and ``.logits_and_features(x)``.
"""

from medsight.classification.model_io import ClassifierBundle, load_classifier, save_model

__all__ = ["ClassifierBundle", "load_classifier", "save_model"]
