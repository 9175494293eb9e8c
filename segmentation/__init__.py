"""MONAI segmentation: networks, transforms, training, inference, phantoms, batch runs.

Modules import torch and MONAI themselves; importing this package alone stays light.
"""
