"""Datasets medsight can build without a download (the embedded demo data)."""
