"""npe2 sample data: every case in :mod:`planner.samples`, resolved from the installed package.

``napari.yaml`` names one command per case as ``napari_plugin._sample_data:<case name>``;
the module resolves those names on access (:func:`__getattr__`), so the list of cases
lives only in ``planner.samples``. Each case opens as its image and its reference label
map, placed in mm; the image layer's metadata carries the case's suitable presets.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

from napari_plugin._layers import LABELS_SOURCE_KEY, LayerData, image_layer_data, labels_layer_data

CASE_KEY = "sample_case"
PRESETS_KEY = "presets"


def sample_layers(name: str) -> list[LayerData]:
    """Image and reference labels of bundled case ``name`` (planner.samples.load_case)."""
    from planner.samples import get_case, load_case

    case = get_case(name)
    image, labels = load_case(name)
    data, meta, kind = image_layer_data(image, f"{name} {case.modality}")
    meta["metadata"][CASE_KEY] = name
    meta["metadata"][PRESETS_KEY] = list(case.presets)
    layers: list[LayerData] = [(data, meta, kind)]
    ldata, lmeta, lkind = labels_layer_data(labels, f"{name} reference labels")
    lmeta["metadata"][CASE_KEY] = name
    lmeta["metadata"][LABELS_SOURCE_KEY] = {"source": "sample reference", "case": name,
                                            "file": case.labels}
    layers.append((ldata, lmeta, lkind))
    return layers


def __getattr__(name: str) -> Callable[[], list[LayerData]]:
    from planner.samples import all_cases

    if name in {case.name for case in all_cases()}:
        loader: Any = partial(sample_layers, name)
        loader.__name__ = name
        loader.__doc__ = f"Sample case {name!r} (planner.samples)."
        return loader
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
