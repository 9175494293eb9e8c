"""The supraclavicular ultrasound simulator: anatomy and physics invariants."""

from __future__ import annotations

import numpy as np
import pytest

from planner.anatomy import label_of
from segmentation.phantom_us import USParams, make_us_phantom


@pytest.fixture(scope="module")
def phantom():
    return make_us_phantom(USParams(seed=7, frames=12))


def test_shapes_labels_and_spacing(phantom):
    assert phantom.image.shape == (12, 256, 256) and phantom.image.array.dtype == np.uint8
    assert phantom.labels.same_grid(phantom.image)
    assert phantom.image.spacing[1:] == (0.15, 0.15)
    present = set(np.unique(phantom.labels.array)) - {0}
    assert present == {label_of(n) for n in ("brachial_plexus", "blood_vessel", "ribs", "lungs")}


def test_artery_anechoic_and_plexus_hypoechoic_cluster_lateral_superficial(phantom):
    image, labels = phantom.image.array.astype(float), phantom.labels.array
    tissue = image[labels == 0].mean()
    artery = labels == label_of("blood_vessel")
    assert image[artery].mean() < 0.35 * tissue
    fascicle_means = []
    for z in range(labels.shape[0]):
        plexus = labels[z] == label_of("brachial_plexus")
        ys, xs = np.nonzero(plexus)
        ay, ax = np.nonzero(artery[z])
        assert xs.mean() < ax.mean()  # lateral = image left
        assert ys.mean() < ay.mean()  # superficial
        fascicle_means.append(np.percentile(image[z][plexus], 25))
    assert np.mean(fascicle_means) < tissue


def test_shadow_below_rib_is_dark_and_pleura_bright(phantom):
    image, labels = phantom.image.array.astype(float), phantom.labels.array
    a = phantom.anatomy
    px = phantom.params.pixel_mm
    cx = int(a.rib_centre_x / px)
    rib_row = int((a.rib_top + 3.0) / px)
    shadow = image[:, rib_row + 5:, cx - 10:cx + 10]
    beside = image[:, rib_row + 5:, 2:20]  # lateral of the rib: soft tissue, no bone above
    assert shadow.mean() < 0.4 * beside.mean()
    rib = labels == label_of("ribs")
    assert image[rib].mean() > 1.5 * image[labels == 0].mean()


def test_artery_pulsates_and_sweep_moves(phantom):
    d = np.asarray(phantom.artery_diameters_mm)
    assert 4.5 < d.mean() < 8.0 and (d.max() - d.min()) / d.mean() > 0.04
    areas = (phantom.labels.array == label_of("blood_vessel")).sum(axis=(1, 2))
    assert areas.max() > areas.min()


def test_same_seed_same_cine_other_seed_differs():
    a = make_us_phantom(USParams(seed=3, frames=3))
    b = make_us_phantom(USParams(seed=3, frames=3))
    c = make_us_phantom(USParams(seed=4, frames=3))
    np.testing.assert_array_equal(a.image.array, b.image.array)
    np.testing.assert_array_equal(a.labels.array, b.labels.array)
    assert not np.array_equal(a.labels.array, c.labels.array)
