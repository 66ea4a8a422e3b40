"""Sliding-window inference, mirroring TTA, fold ensembling and resampling back to the input grid."""
