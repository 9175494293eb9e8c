"""napari layer data from planner objects (pure: no napari or Qt import).

Every layer is placed in millimetres: ``scale = volume.spacing`` and
``translate = volume.origin_zyx`` (see :mod:`planner.volume`), so points exchanged with
napari are ``[z, y, x]`` mm and convert to patient LPS with
:meth:`planner.volume.Volume.napari_to_lps`. The source :class:`~planner.volume.Volume`
(or its grid) travels in ``metadata["volume"]`` so that writers and the planning widget
can go back to patient coordinates exactly, rotated grids included.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from planner import anatomy
from planner.errors import LabelMapError
from planner.volume import Volume

LayerData = tuple[Any, dict[str, Any], str]

#: display window for CT (soft-tissue abdomen window, HU)
CT_WINDOW = (-160.0, 240.0)
#: metadata keys shared by the reader, writers and widgets
VOLUME_KEY = "volume"
PLAN_KEY = "plan"
ROLE_KEY = "plexus_role"
LABELS_SOURCE_KEY = "labels_source"


def placement(volume: Volume) -> dict[str, Any]:
    """``scale``/``translate`` keyword arguments that put a layer on ``volume``'s grid in mm."""
    return {"scale": tuple(volume.spacing), "translate": tuple(volume.origin_zyx)}


def grid_of(volume: Volume) -> Volume:
    """A copy of ``volume``'s grid and DICOM source with a tiny array (for layer metadata)."""
    return Volume(array=np.zeros((1, 1, 1), dtype=np.uint8), spacing=volume.spacing, origin=volume.origin,
                  direction=volume.direction, modality=volume.modality, source=volume.source,
                  warnings=volume.warnings)


def image_layer_data(volume: Volume, name: str) -> LayerData:
    """An Image layer in mm; ultrasound colour frames are shown as RGB when present."""
    meta: dict[str, Any] = {
        "name": name,
        **placement(volume),
        "metadata": {VOLUME_KEY: volume, "modality": volume.modality, "warnings": list(volume.warnings),
                     ROLE_KEY: "image"},
    }
    data: Any = volume.array
    if volume.display_rgb is not None:
        data = volume.display_rgb
        meta["rgb"] = True
    elif volume.modality == "CT":
        meta["contrast_limits"] = CT_WINDOW
    else:
        finite = volume.array[np.isfinite(volume.array)] if volume.array.dtype.kind == "f" else volume.array
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        meta["contrast_limits"] = (lo, hi if hi > lo else lo + 1.0)
    return (data, meta, "image")


def labels_layer_data(labels: Volume, name: str = "labels") -> LayerData:
    """A Labels layer in mm with vocabulary colours, and names in ``features`` (shown on hover).

    Raises:
        LabelMapError: when the map holds values outside the vocabulary.
    """
    array = np.asarray(labels.array)
    if array.dtype.kind not in "iub":
        if not np.all(np.mod(array, 1) == 0):
            raise LabelMapError(f"label map {name!r} holds non-integer values; expected vocabulary labels")
        array = array.astype(np.int32)
    present = [int(v) for v in np.unique(array) if int(v) != anatomy.BACKGROUND]
    unknown = [v for v in present if v not in {s.label for s in anatomy.STRUCTURES}]
    if unknown:
        raise LabelMapError(f"label map {name!r} holds values {unknown[:10]} that are not in the vocabulary "
                            "(planner.anatomy); map them with planner.anatomy.external_label_mapping first")
    names = anatomy.label_names(present)
    colors = anatomy.color_table(present)
    colormap: dict[int | None, tuple[float, float, float, float]] = {None: (0.0, 0.0, 0.0, 0.0)}
    colormap.update(colors)
    index = [anatomy.BACKGROUND, *present]
    features = {"index": index, "name": ["background", *(names[v] for v in present)],
                "display_name": ["Background", *(anatomy.structure(v).display_name for v in present)]}
    meta: dict[str, Any] = {
        "name": name,
        **placement(labels),
        "colormap": colormap,
        "features": features,
        "metadata": {VOLUME_KEY: grid_of(labels), ROLE_KEY: "labels", "label_names": names},
        "opacity": 0.35,
    }
    return (array, meta, "labels")


def anatomy_3d_colormap(labels: Any) -> dict[int | None, tuple[float, float, float, float]]:
    """Vocabulary colours with context structures (body, skin, fat, muscle) transparent.

    In 3D the context would hide everything inside it; targets and organs at risk stay.
    """
    present = [int(v) for v in np.unique(np.asarray(labels)) if int(v) != anatomy.BACKGROUND]
    colors = anatomy.color_table(present)
    for value in present:
        if anatomy.structure(value).role is anatomy.Role.CONTEXT:
            colors[value] = (0.0, 0.0, 0.0, 0.0)
    return {None: (0.0, 0.0, 0.0, 0.0), **colors}


def volume_from_layer(data: Any, meta: dict[str, Any]) -> Volume:
    """The :class:`Volume` a layer shows: its stored grid with ``data`` as the array.

    Falls back to ``scale``/``translate`` with an identity direction for layers that were
    not made by this plugin.
    """
    array = np.asarray(data)
    stored = (meta.get("metadata") or {}).get(VOLUME_KEY)
    if isinstance(stored, Volume) and stored.shape == tuple(array.shape[:3]):
        return stored.with_array(array)
    if isinstance(stored, Volume):
        return Volume(array=array, spacing=stored.spacing, origin=stored.origin, direction=stored.direction,
                      modality=stored.modality, source=stored.source)
    scale = meta.get("scale")
    translate = meta.get("translate")
    scale = tuple(float(v) for v in (scale if scale is not None else (1.0, 1.0, 1.0)))[-3:]
    translate = tuple(float(v) for v in (translate if translate is not None else (0.0, 0.0, 0.0)))[-3:]
    return Volume(array=array, spacing=scale, origin=(translate[2], translate[1], translate[0]))


def grid_volume(grid: dict[str, Any]) -> Volume | None:
    """A tiny :class:`Volume` carrying a plan's grid (``Plan.grid``) for coordinate conversion."""
    try:
        return Volume(array=np.zeros((1, 1, 1), dtype=np.uint8), spacing=tuple(grid["spacing_zyx_mm"]),
                      origin=tuple(grid["origin_lps_mm"]), direction=np.asarray(grid["direction"], float))
    except (KeyError, TypeError, ValueError):
        return None


def plan_layer_data(plan: Any, name: str = "plan") -> list[LayerData]:
    """Every trajectory of a :class:`planner.plan.Plan` as needle vectors in napari world mm.

    The plan stores patient LPS mm and the grid it was made on; with that grid the needles
    land exactly on the image (rotated grids included). Without it LPS is shown as
    ``[z, y, x]`` directly, which is exact for axis-aligned images with the same origin.
    The plan itself travels in ``metadata["plan"]`` so the plan writer can save it again.
    """
    from napari_plugin._needle import as_vectors, hex_color

    grid = grid_volume(dict(getattr(plan, "grid", {}) or {}))
    vectors, colors, roles, ranks, sides = [], [], [], [], []
    for t in plan.trajectories:
        lps = np.stack([np.asarray(t.entry_lps_mm, float), np.asarray(t.target_lps_mm, float)])
        world = grid.lps_to_napari(lps) if grid is not None else lps[:, ::-1]
        vectors.append(as_vectors(world)[0])
        colors.append(hex_color(bool(t.feasible)) if t.role == "primary" else ("#8080a0" if t.feasible else "#a04040"))
        roles.append(t.role)
        ranks.append(int(t.rank))
        sides.append(t.side)
    data = np.asarray(vectors, float).reshape(-1, 2, 3)
    meta: dict[str, Any] = {
        "name": name,
        "edge_color": colors if colors else "cyan",
        "edge_width": 1.5,
        "vector_style": "line",
        "features": {"role": roles, "rank": ranks, "side": sides},
        "metadata": {PLAN_KEY: plan, ROLE_KEY: "plan"},
    }
    return [(data, meta, "vectors")]
