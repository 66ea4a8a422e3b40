"""Dataset fingerprint -> versioned, hashed training plan (JSON)."""
