"""The classification view of the one manifest reader (medsight.data.manifest), under its former name."""

from medsight.data.manifest import (RESERVED, SPLITS, TASKS, ClsManifest, infer_labels,
                                    read_classification_manifest as read_manifest)

__all__ = ["ClsManifest", "RESERVED", "SPLITS", "TASKS", "infer_labels", "read_manifest"]
