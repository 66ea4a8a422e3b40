"""Resumable, deterministic segmentation training."""
