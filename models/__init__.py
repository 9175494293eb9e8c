"""Bundled MONAI bundles and the analgesia model (installed as ``planner.bundled_models``)."""
