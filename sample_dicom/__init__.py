"""Bundled sample cases as DICOM series (installed as ``planner.bundled_samples``)."""
