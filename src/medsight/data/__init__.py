"""Datasets on disk: the MSD / nnU-Net layout and the CSV manifest, validated before any training."""
