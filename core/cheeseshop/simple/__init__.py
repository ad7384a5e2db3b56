"""The Simple repository API (PEP 503/691/658/700) and file serving."""
