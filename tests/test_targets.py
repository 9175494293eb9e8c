"""Target-region rules on phantoms (20 seeds), on edited maps (fallbacks, errors) and on a
real TotalSegmentator label map."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from planner.anatomy import external_label_mapping, label_of, vertebra_name
from planner.errors import LabelMapError
from planner.targets import (
    CELIAC_MAX_DISTANCE_MM,
    CELIAC_NO_SMA_SPAN_MM,
    SHP_DEPTH_MM,
    TARGET_NAMES,
    add_targets,
    derive_targets,
)
from planner.volume import Volume, load_nifti
from segmentation.phantom_ct import CTPhantom, make_ct_phantom
from tests.conftest import shared_path

SEEDS = tuple(range(20))
SPACING = (5.0, 5.0, 5.0)


@pytest.fixture(scope="module")
def cases() -> dict[int, tuple[CTPhantom, object]]:
    out = {}
    for seed in SEEDS:
        ph = make_ct_phantom(seed, spacing_mm=SPACING)
        out[seed] = (ph, derive_targets(ph.labels))
    return out


def _pts(vol: Volume, mask: np.ndarray) -> np.ndarray:
    return vol.index_to_lps(np.argwhere(mask))


def _edit(labels: Volume, names: tuple[str, ...], to: str = "body") -> Volume:
    arr = labels.array.copy()
    arr[np.isin(arr, [label_of(n) for n in names])] = label_of(to)
    return labels.with_array(arr)


def test_all_targets_non_empty_disjoint_and_free(cases):
    for seed, (ph, tr) in cases.items():
        assert set(tr.masks) == set(TARGET_NAMES), (seed, tr.messages)
        assert not tr.messages
        total = sum(m.astype(int) for m in tr.masks.values())
        assert total.max() == 1  # disjoint
        free = np.isin(ph.labels.array, [0, label_of("body")])
        for name, m in tr.masks.items():
            assert m.sum() >= 5, (seed, name)
            assert free[m].all(), (seed, name)


def test_celiac_region_hugs_the_front_of_the_aorta_between_the_origins(cases):
    for seed, (ph, tr) in cases.items():
        vol = ph.labels
        m = tr.masks["celiac_plexus_region"]
        p = _pts(vol, m)
        zc, zs = tr.landmarks["celiac_origin"][2], tr.landmarks["sma_origin"][2]
        half = vol.spacing[0] / 2
        assert p[:, 2].min() >= zs - half - 1e-6 and p[:, 2].max() <= zc + half + 1e-6
        # origins read from the labels agree with the generator's truth
        for key in ("celiac_origin", "sma_origin"):
            assert np.linalg.norm(np.subtract(tr.landmarks[key], ph.landmarks[key])) < 2 * vol.spacing[1], (seed, key)
        aorta = vol.array == label_of("aorta")
        dist = ndimage.distance_transform_edt(~aorta, sampling=vol.spacing)
        assert dist[m].max() <= CELIAC_MAX_DISTANCE_MM + 1e-6
        # anterior or lateral: never behind the aorta's centre in its slice
        for k in np.unique(np.argwhere(m)[:, 0]):
            a = _pts(vol, aorta & (np.arange(vol.shape[0]) == k)[:, None, None])
            r = _pts(vol, m & (np.arange(vol.shape[0]) == k)[:, None, None])
            assert r[:, 1].max() <= a[:, 1].mean() + vol.spacing[1], seed
            assert r[:, 1].mean() < a[:, 1].mean()
        # both sides of the aorta are covered
        ax = ph.landmarks["celiac_origin"][0]
        assert (p[:, 0] < ax).any() and (p[:, 0] > ax).any()


def test_shp_region_in_front_of_l5_s1_below_the_bifurcation_between_iliacs(cases):
    for seed, (ph, tr) in cases.items():
        vol = ph.labels
        m = tr.masks["superior_hypogastric_plexus_region"]
        p = _pts(vol, m)
        half = vol.spacing[0] / 2
        # at or below the bifurcation, and no higher than about mid-L5 (one voxel)
        assert p[:, 2].max() <= ph.landmarks["aortic_bifurcation"][2] + half
        assert p[:, 2].max() <= ph.landmarks["L5"][2] + half + vol.spacing[0]
        s1_top = _pts(vol, vol.array == label_of("sacrum"))[:, 2].max()
        assert p[:, 2].min() >= s1_top - 10.0 - half - 1e-6
        spine = np.isin(vol.array, [label_of(vertebra_name("L5")), label_of("disc_L5_S1"),
                                    label_of("sacrum")])
        mid_x = np.median(_pts(vol, spine)[:, 0])
        for k in np.unique(np.argwhere(m)[:, 0]):
            sl = (np.arange(vol.shape[0]) == k)[:, None, None]
            s = _pts(vol, spine & sl)
            mid = np.abs(s[:, 0] - ph.landmarks["L5"][0]) <= 20
            front = s[mid, 1].min()
            r = _pts(vol, m & sl)
            assert r[:, 1].max() < front and r[:, 1].min() >= front - SHP_DEPTH_MM - 1e-6
            il = _pts(vol, (vol.array == label_of("iliac_arteries")) & sl)
            if len(il):
                right, left = il[il[:, 0] < mid_x], il[il[:, 0] >= mid_x]
                if len(right):
                    assert r[:, 0].min() > right[:, 0].mean()
                if len(left):
                    assert r[:, 0].max() < left[:, 0].mean()


def test_splanchnic_zone_anterolateral_to_t12_both_sides_retrocrural(cases):
    """The retrocrural zone runs from the T12 body past the T12-L1 disc to mid-L1 (the classic
    retrocrural celiac needle is planned at L1, Korean J Pain 2015;28:109)."""
    for seed, (ph, tr) in cases.items():
        vol = ph.labels
        m = tr.masks["splanchnic_nerve_zone"]
        p = _pts(vol, m)
        t12 = _pts(vol, vol.array == label_of(vertebra_name("T12")))
        body = t12[t12[:, 1] < ph.landmarks["T12"][1] + 5]
        l1 = _pts(vol, vol.array == label_of(vertebra_name("L1")))
        l1_mid = 0.5 * (l1[:, 2].min() + l1[:, 2].max())
        assert l1_mid - vol.spacing[0] <= p[:, 2].min() < body[:, 2].min(), seed  # reaches into L1
        assert p[:, 2].max() <= body[:, 2].max() + 1e-6
        lo, hi = tr.z_ranges["splanchnic_nerve_zone"]
        assert lo - 1e-6 <= p[:, 2].min() and p[:, 2].max() <= hi + 1e-6
        cx, cy = ph.landmarks["T12"][0], ph.landmarks["T12"][1]
        assert (p[:, 0] < cx - 5).any() and (p[:, 0] > cx + 5).any(), seed  # both sides
        assert (p[:, 1] <= cy + vol.spacing[1]).all()  # not behind the body's centre
        assert np.abs(p[:, 0] - cx).min() > 3.0  # lateral of straight-ahead
        # retrocrural: every zone voxel is nearer the T12 body than the crus on its ray
        crus = _pts(vol, vol.array == label_of("diaphragm_crura"))
        for q in p[:: max(1, len(p) // 40)]:
            same = crus[np.abs(crus[:, 2] - q[2]) < 1e-3]
            ang_q = np.arctan2(q[0] - cx, -(q[1] - cy))
            ang_c = np.arctan2(same[:, 0] - cx, -(same[:, 1] - cy))
            ray = np.abs(np.angle(np.exp(1j * (ang_c - ang_q)))) < np.deg2rad(2.5)
            if ray.any():
                assert np.hypot(q[0] - cx, q[1] - cy) < np.hypot(same[ray, 0] - cx, same[ray, 1] - cy).min()


def test_add_targets_paints_only_free_tissue(cases):
    ph, tr = cases[0]
    painted = add_targets(ph.labels, regions=tr)
    assert painted.same_grid(ph.labels)
    before, after = ph.labels.array, painted.array
    changed = before != after
    assert np.isin(before[changed], [0, label_of("body")]).all()
    for name, m in tr.masks.items():
        assert (after[m] == label_of(name)).all()
    assert changed.sum() == sum(int(m.sum()) for m in tr.masks.values())
    again = add_targets(ph.labels)  # derives by itself, same result
    assert np.array_equal(again.array, after)
    twice = add_targets(painted)  # idempotent: painted targets count as free tissue
    assert np.array_equal(twice.array, after)


def test_celiac_fallbacks_without_sma_or_celiac(cases):
    ph, _ = cases[1]
    no_sma = derive_targets(_edit(ph.labels, ("superior_mesenteric_artery",)), ["celiac_plexus_region"])
    lo, hi = no_sma.z_ranges["celiac_plexus_region"]
    assert hi - lo == pytest.approx(CELIAC_NO_SMA_SPAN_MM)
    assert "SMA" in no_sma.notes["celiac_plexus_region"]
    none = derive_targets(_edit(ph.labels, ("superior_mesenteric_artery", "celiac_trunk")),
                          ["celiac_plexus_region"])
    lo, hi = none.z_ranges["celiac_plexus_region"]
    sup, inf = ph.details["z_superior_endplate_mm"], ph.details["z_inferior_endplate_mm"]
    tol = ph.labels.spacing[0]
    assert abs(hi - 0.5 * (inf["T12"] + sup["L1"])) <= tol
    assert abs(lo - 0.5 * (inf["L1"] + sup["L1"])) <= tol
    assert none.masks["celiac_plexus_region"].any()
    # without disc labels the disc is bracketed by the T12 and L1 bodies
    nodisc = derive_targets(_edit(ph.labels, ("superior_mesenteric_artery", "celiac_trunk",
                                              "disc_T12_L1")), ["celiac_plexus_region"])
    assert abs(nodisc.z_ranges["celiac_plexus_region"][1] - hi) <= tol


def test_splanchnic_without_crura_uses_distance_to_bone(cases):
    ph, tr = cases[2]
    no_crus = derive_targets(_edit(ph.labels, ("diaphragm_crura",)), ["splanchnic_nerve_zone"])
    m = no_crus.masks["splanchnic_nerve_zone"]
    bone = np.isin(ph.labels.array, [label_of(vertebra_name("T12")), label_of("disc_T12_L1"),
                                     label_of(vertebra_name("L1"))])  # the zone's reference bodies
    d = ndimage.distance_transform_edt(~bone, sampling=ph.labels.spacing)
    assert m.any() and d[m].max() <= 8.0 * np.sqrt(2) + 1e-6


def test_missing_inputs_give_reasons_or_raise(cases):
    ph, _ = cases[3]
    with pytest.raises(LabelMapError, match="aorta"):
        derive_targets(_edit(ph.labels, ("aorta",)), ["celiac_plexus_region"])
    partial = derive_targets(_edit(ph.labels, ("aorta",)))
    assert set(partial.masks) == {"splanchnic_nerve_zone"}
    assert "aorta" in partial.messages["celiac_plexus_region"]
    assert "aorta" in partial.messages["superior_hypogastric_plexus_region"]
    no_pelvis = derive_targets(_edit(ph.labels, (vertebra_name("L5"), "disc_L5_S1", "sacrum")))
    assert "L5" in no_pelvis.messages["superior_hypogastric_plexus_region"]
    with pytest.raises(LabelMapError, match="superior_hypogastric_plexus_region: no L5"):
        derive_targets(_edit(ph.labels, (vertebra_name("L5"), "disc_L5_S1", "sacrum")), strict=True)
    with pytest.raises(LabelMapError, match="unknown target"):
        derive_targets(ph.labels, ["celiac_ganglion"])
    with pytest.raises(LabelMapError, match="no target region"):
        derive_targets(_edit(ph.labels, ("aorta", vertebra_name("T12"))))


def test_bad_label_maps_are_refused(cases):
    ph, _ = cases[0]
    arr = ph.labels.array.copy()
    arr[0, 0, 0] = 250
    with pytest.raises(LabelMapError, match="outside the vocabulary"):
        derive_targets(ph.labels.with_array(arr))
    oblique = Volume(array=ph.labels.array, spacing=ph.labels.spacing, origin=ph.labels.origin,
                     direction=np.array([[0.0, 1, 0], [1, 0, 0], [0, 0, 1]]))
    with pytest.raises(LabelMapError, match="axis-aligned"):
        derive_targets(oblique)
    with pytest.raises(LabelMapError, match="integer"):
        derive_targets(ph.labels.with_array(ph.labels.array.astype(float) + 0.5))


def test_rules_follow_patient_axes_not_array_order(cases):
    """Flipping the array in y (direction -1) describes the same patient: same regions."""
    ph, tr = cases[4]
    lab = ph.labels
    ny = lab.shape[1]
    flipped = Volume(array=lab.array[:, ::-1, :].copy(), spacing=lab.spacing,
                     origin=(lab.origin[0], lab.origin[1] + (ny - 1) * lab.spacing[1], lab.origin[2]),
                     direction=np.diag([1.0, -1.0, 1.0]))
    tf = derive_targets(flipped)
    for name in TARGET_NAMES:
        assert np.array_equal(tf.masks[name][:, ::-1, :], tr.masks[name]), name


def test_totalsegmentator_map(shared_data):
    folder = shared_path("ct_abdomen_ts_dicom")
    raw = load_nifti(folder / "silver_labels_totalseg.nii.gz")
    class_map = {int(k): v for k, v in json.loads((folder / "labels_totalsegmentator_v2.json").read_text()).items()}
    mapping, unmapped = external_label_mapping(class_map)
    lut = np.zeros(max(max(class_map), int(raw.array.max())) + 1, np.uint8)
    for value, label in mapping.items():
        lut[value] = label
    labels = raw.with_array(lut[raw.array])
    tr = derive_targets(labels)
    # the series covers about T11-T12: only the splanchnic zone can be derived
    assert set(tr.masks) == {"splanchnic_nerve_zone"}
    m = tr.masks["splanchnic_nerve_zone"]
    assert m.sum() > 100 and (labels.array[m] == 0).all()
    assert "T12" in tr.messages["celiac_plexus_region"]
    assert "L5" in tr.messages["superior_hypogastric_plexus_region"]
    assert "cut by the edge" in tr.notes["splanchnic_nerve_zone"]
    p = _pts(labels, m)
    t12 = _pts(labels, labels.array == label_of(vertebra_name("T12")))
    assert (p[:, 0] < np.median(t12[:, 0])).any() and (p[:, 0] > np.median(t12[:, 0])).any()
    assert p[:, 1].mean() < np.median(t12[:, 1])  # in front of the vertebra's middle
