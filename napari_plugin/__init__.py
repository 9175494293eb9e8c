"""napari plugin for plexus-planner (npe2 manifest in ``napari.yaml``).

Thin over ``planner`` and ``segmentation``: every number it shows is computed there.
Importing it never imports torch or MONAI.
"""
