"""Anatomical invariants of the CT phantom over 20 seeds (4 mm grids to stay fast)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from planner.anatomy import STRUCTURES, VERTEBRAL_LEVELS, label_of, structure, vertebra_name
from planner.errors import PlannerError
from segmentation.phantom_ct import CTPhantom, PhantomParams, make_ct_phantom

SEEDS = tuple(range(20))
SPACING = (5.0, 5.0, 5.0)

EXPECTED = (
    "skin", "subcutaneous_fat", "body", "muscle", "paraspinal_muscles", "psoas_muscles",
    "aorta", "celiac_trunk", "superior_mesenteric_artery", "renal_arteries", "iliac_arteries",
    "inferior_vena_cava", "portal_vein", "iliac_veins", "kidney_left", "kidney_right", "liver",
    "spleen", "pancreas", "stomach", "bowel", "adrenal_glands", "spinal_cord", "spinal_canal",
    "ribs", "lungs", "diaphragm_crura", "sacrum", "bone_other",
) + tuple(vertebra_name(v) for v in VERTEBRAL_LEVELS[:-1]) + tuple(
    f"disc_{a}_{b}" for a, b in zip(VERTEBRAL_LEVELS[:-1], VERTEBRAL_LEVELS[1:]))


@pytest.fixture(scope="module")
def phantoms() -> dict[int, CTPhantom]:
    return {seed: make_ct_phantom(seed, spacing_mm=SPACING) for seed in SEEDS}


def _z(ph: CTPhantom) -> np.ndarray:
    return ph.labels.origin[2] + ph.labels.spacing[0] * np.arange(ph.labels.shape[0])


def _coords(ph: CTPhantom, mask: np.ndarray) -> np.ndarray:
    """LPS (x, y, z) mm of the voxels of a mask."""
    return ph.labels.index_to_lps(np.argwhere(mask))


def _body_z_range(ph: CTPhantom, level: str) -> tuple[float, float]:
    """z extent of the anterior half of a vertebral body, read from the labels."""
    pts = _coords(ph, ph.labels.array == label_of(vertebra_name(level)))
    front = pts[pts[:, 1] < ph.landmarks[level][1]]
    return float(front[:, 2].min()), float(front[:, 2].max())


def test_grid_types_and_vocabulary(phantoms):
    known = {s.label for s in STRUCTURES} | {0}
    for ph in phantoms.values():
        assert ph.image.array.dtype == np.int16 and ph.labels.array.dtype == np.uint8
        assert ph.image.same_grid(ph.labels) and ph.image.is_axis_aligned
        assert set(np.unique(ph.labels.array).tolist()) <= known
        assert ph.image.modality == "CT"
        assert ph.labels.shape == (72, 77, 77)  # 360 x 384 x 384 mm


def test_every_structure_present_and_counts_consistent(phantoms):
    for seed, ph in phantoms.items():
        lab = ph.labels.array
        counts = np.bincount(lab.ravel(), minlength=256)
        # one label per voxel: the per-label counts add up to the grid exactly
        assert counts.sum() == lab.size
        missing = [n for n in EXPECTED if counts[label_of(n)] == 0]
        assert not missing, f"seed {seed}: missing {missing}"
        assert counts[label_of("tumour")] == 0  # no tumour unless asked
        for name in ("celiac_plexus_region", "superior_hypogastric_plexus_region",
                     "splanchnic_nerve_zone"):
            assert counts[label_of(name)] == 0  # targets are derived, never painted here


def test_layers_nest_from_skin_inwards(phantoms):
    for ph in phantoms.values():
        lab = ph.labels.array
        inside = lab > 0
        filled = ndimage.binary_fill_holes(inside[40])
        assert np.array_equal(filled, inside[40])  # a solid body cross-section
        # skin touches the air; fat and muscle never do
        air_nb = ndimage.binary_dilation(~inside) & inside
        names = {structure(int(v)).name for v in np.unique(lab[air_nb])}
        assert names <= {"skin"}, names


def test_aorta_anterior_and_slightly_left_of_vertebral_bodies(phantoms):
    lab_a = label_of("aorta")
    for seed, ph in phantoms.items():
        z = _z(ph)
        for level in ("T11", "T12", "L1", "L2", "L3"):
            k = int(np.argmin(np.abs(z - ph.landmarks[level][2])))
            aorta = _coords(ph, (ph.labels.array == lab_a) & (np.arange(len(z)) == k)[:, None, None])
            body = _coords(ph, (ph.labels.array == label_of(vertebra_name(level)))
                           & (np.arange(len(z)) == k)[:, None, None])
            assert len(aorta) and len(body), (seed, level)
            front = body[:, 1].min()
            centre_x = ph.landmarks[level][0]
            # the thoracic aorta (T11) lies anterolaterally, the abdominal aorta in front
            limit = ph.landmarks[level][1] if level == "T11" else front
            assert aorta[:, 1].mean() < limit, f"seed {seed} {level}: aorta not anterior to the body"
            dx = aorta[:, 0].mean() - centre_x
            assert 0.0 < dx < 35.0, f"seed {seed} {level}: aorta {dx:.1f} mm left of the body centre"


def test_celiac_origin_between_t12_and_l1_and_sma_below(phantoms):
    levels = set()
    for seed, ph in phantoms.items():
        zc = ph.landmarks["celiac_origin"][2]
        l1_lo, _ = _body_z_range(ph, "L1")
        _, t12_hi = _body_z_range(ph, "T12")
        assert l1_lo <= zc <= t12_hi, f"seed {seed}: celiac origin z {zc:.1f} outside T12-L1"
        assert ph.landmarks["sma_origin"][2] < zc
        levels.add(ph.details["celiac_level"])
        faces = ph.details["celiac_origin_faces"]
        if faces != "T12-L1 disc":
            lo, hi = _body_z_range(ph, faces.split()[0])
            assert lo - 5.0 <= zc <= hi + 5.0, (seed, faces)
    assert levels == {"T12", "L1"}  # both levels occur across seeds


@pytest.mark.parametrize("level", ["T12", "L1"])
def test_celiac_level_parameter(level):
    for seed in (0, 1, 2):
        ph = make_ct_phantom(PhantomParams(seed=seed, celiac_level=level), spacing_mm=(6, 6, 6))
        lo, hi = _body_z_range(ph, level)
        half = ph.labels.spacing[0] / 2
        assert lo - half <= ph.landmarks["celiac_origin"][2] <= hi + half


def test_kidneys_between_t12_and_l3(phantoms):
    left_higher = []
    for seed, ph in phantoms.items():
        _, t12_hi = _body_z_range(ph, "T12")
        l3_lo, _ = _body_z_range(ph, "L3")
        tol = ph.labels.spacing[0]
        zc = {}
        for side in ("left", "right"):
            pts = _coords(ph, ph.labels.array == label_of(f"kidney_{side}"))
            assert l3_lo - tol <= pts[:, 2].min() and pts[:, 2].max() <= t12_hi + tol, (seed, side)
            # posterolateral: lateral to the vertebral bodies, behind the aorta
            assert np.sign(pts[:, 0].mean()) == (1 if side == "left" else -1)
            assert abs(pts[:, 0].mean()) > 45
            # hilum about 5 cm from the median plane (Gray's Anatomy): psoas and crus, not
            # the kidney, lie beside the vertebral bodies
            mid = ph.landmarks["L1"][0]
            assert np.abs(pts[:, 0] - mid).min() >= 30.0, (seed, side)
            assert 55.0 <= abs(pts[:, 0].mean() - mid) <= 85.0, (seed, side)
            zc[side] = pts[:, 2].mean()
        left_higher.append(zc["left"] - zc["right"])
        # no liver behind the right kidney, medial to its lateral edge (retrorenal space)
        lab = ph.labels.array
        for k in np.nonzero((lab == label_of("kidney_right")).any(axis=(1, 2)))[0]:
            kp = _coords(ph, (lab == label_of("kidney_right")) & (np.arange(lab.shape[0]) == k)[:, None, None])
            lp = _coords(ph, (lab == label_of("liver")) & (np.arange(lab.shape[0]) == k)[:, None, None])
            behind = (lp[:, 1] > kp[:, 1].mean() + 1e-3) & (lp[:, 0] > kp[:, 0].min() + 1e-3)
            assert not behind.any(), (seed, k)
    assert np.mean(left_higher) > 5.0


def test_aortic_bifurcation_near_l4(phantoms):
    for seed, ph in phantoms.items():
        zb = ph.landmarks["aortic_bifurcation"][2]
        assert _body_z_range(ph, "L5")[1] <= zb <= _body_z_range(ph, "L3")[0], seed
        lowest = _coords(ph, ph.labels.array == label_of("aorta"))[:, 2].min()
        assert abs(lowest - zb) <= ph.labels.spacing[0] + 1e-6


def test_organs_in_their_usual_places(phantoms):
    for seed, ph in phantoms.items():
        lab = ph.labels.array

        def centre(name: str) -> np.ndarray:
            return _coords(ph, lab == label_of(name)).mean(axis=0)

        spine_x, aorta = ph.landmarks["L1"][0], centre("aorta")
        assert centre("liver")[0] < spine_x - 20 and centre("spleen")[0] > spine_x + 50
        assert centre("spleen")[1] > aorta[1]  # spleen posterolateral
        assert centre("stomach")[0] > spine_x and centre("stomach")[1] < aorta[1]
        ivc = centre("inferior_vena_cava")
        assert ivc[0] < aorta[0] - 15  # IVC right of the aorta
        # pancreas in front of the aorta; its head right of the SMV/portal confluence
        pan = _coords(ph, lab == label_of("pancreas"))
        assert pan[:, 1].mean() < aorta[1]
        assert pan[:, 0].min() < ph.landmarks["sma_origin"][0] - 20 < pan[:, 0].max() - 40
        # adrenals above the kidneys' centres, medial to them
        adr = _coords(ph, lab == label_of("adrenal_glands"))
        for side, sgn in (("left", 1), ("right", -1)):
            k = centre(f"kidney_{side}")
            a = adr[np.sign(adr[:, 0] - spine_x) == sgn]
            assert len(a) and a[:, 2].mean() > k[2] and abs(a[:, 0].mean() - spine_x) < abs(k[0] - spine_x), (seed, side)


def test_landmarks_lie_in_their_structures(phantoms):
    for ph in phantoms.values():
        zs = [ph.landmarks[v][2] for v in VERTEBRAL_LEVELS]
        assert zs == sorted(zs, reverse=True)
        for level in VERTEBRAL_LEVELS:
            idx = tuple(np.round(ph.labels.lps_to_index(ph.landmarks[level])).astype(int))
            assert ph.labels.array[idx] == label_of(vertebra_name(level))


def test_lungs_reach_the_posterior_costophrenic_recess(phantoms):
    for seed, ph in phantoms.items():
        lung = _coords(ph, ph.labels.array == label_of("lungs"))
        t12_lo, t12_hi = _body_z_range(ph, "T12")
        l1_lo, _ = _body_z_range(ph, "L1")
        assert l1_lo - 5 <= lung[:, 2].min() <= t12_hi, seed
        # the recess is posterior: its lowest voxels lie behind the vertebral body centre
        low = lung[lung[:, 2] <= lung[:, 2].min() + 8]
        assert low[:, 1].mean() > ph.landmarks["T12"][1] - 10


def test_hu_means_in_cited_ranges(phantoms):
    ranges = {  # portal-venous CT, docs/phantom.md
        "aorta": (150, 250), "liver": (90, 130), "spleen": (100, 140), "pancreas": (80, 130),
        "kidney_left": (130, 200), "kidney_right": (130, 200), "portal_vein": (140, 220),
        "subcutaneous_fat": (-120, -80), "muscle": (35, 75), "paraspinal_muscles": (35, 75),
        "psoas_muscles": (35, 75), "lungs": (-900, -750), "vertebra_L3": (150, 600),
        "disc_L3_L4": (50, 130), "spinal_canal": (-10, 40),
    }
    for seed in SEEDS[:5]:
        ph = phantoms[seed]
        lab, img = ph.labels.array, ph.image.array.astype(float)
        for name, (lo, hi) in ranges.items():
            m = ndimage.binary_erosion(lab == label_of(name))  # interior: no partial volume
            if not m.any():
                m = lab == label_of(name)
            mean = img[m].mean()
            assert lo <= mean <= hi, f"seed {seed} {name}: mean {mean:.0f} HU not in {lo}..{hi}"
        assert (img[lab == label_of("bowel")] < -900).any()  # gas pockets
        assert img[lab == 0].mean() < -950  # air around the body


def test_noise_and_partial_volume():
    ph = make_ct_phantom(PhantomParams(seed=3, noise_hu=12.0), spacing_mm=(3, 3, 3))
    lab, img = ph.labels.array, ph.image.array.astype(float)
    liver = ndimage.binary_erosion(lab == label_of("liver"), iterations=2)
    assert 9.0 <= img[liver].std() <= 22.0
    aorta = lab == label_of("aorta")
    edge = aorta & ~ndimage.binary_erosion(aorta)
    core = ndimage.binary_erosion(aorta, iterations=2)
    fat = ndimage.binary_erosion(lab == label_of("subcutaneous_fat"))
    assert img[fat].mean() < img[edge].mean() < img[core].mean() - 10
    quiet = make_ct_phantom(PhantomParams(seed=3, noise_hu=0.0), spacing_mm=(6, 6, 6))
    noisy = make_ct_phantom(PhantomParams(seed=3, noise_hu=15.0), spacing_mm=(6, 6, 6))
    assert np.array_equal(quiet.labels.array, noisy.labels.array)
    diff = noisy.image.array.astype(float) - quiet.image.array
    assert 12.0 <= diff.std() <= 18.0


def test_deterministic_per_seed_and_varies_across_seeds(phantoms):
    again = make_ct_phantom(7, spacing_mm=SPACING)
    assert np.array_equal(again.labels.array, phantoms[7].labels.array)
    assert np.array_equal(again.image.array, phantoms[7].image.array)
    assert again.landmarks == phantoms[7].landmarks
    assert not np.array_equal(phantoms[7].labels.array, phantoms[8].labels.array)
    kidney_z = [ph.landmarks["celiac_origin"][2] - ph.landmarks["L1"][2] for ph in phantoms.values()]
    aorta_x = [ph.landmarks["celiac_origin"][0] - ph.landmarks["L1"][0] for ph in phantoms.values()]
    assert np.std(kidney_z) > 3.0 and np.std(aorta_x) > 1.0


def _anterior_fat_mm(ph: CTPhantom) -> float:
    z = _z(ph)
    k = int(np.argmin(np.abs(z - ph.landmarks["L3"][2])))
    ix = int(round(ph.labels.lps_to_index(ph.landmarks["L3"])[2]))
    column = ph.labels.array[k, :, ix]
    first = np.argmax(column > 0)
    anterior = column[first:first + column.size // 2]
    return float((anterior == label_of("subcutaneous_fat")).sum() * ph.labels.spacing[1])


def test_bmi_increases_subcutaneous_fat():
    for seed in (0, 1):
        thin = make_ct_phantom(PhantomParams(seed=seed, bmi=19.0), spacing_mm=(8, 3, 3))
        heavy = make_ct_phantom(PhantomParams(seed=seed, bmi=36.0), spacing_mm=(8, 3, 3))
        assert _anterior_fat_mm(heavy) >= _anterior_fat_mm(thin) + 20.0
        fat = label_of("subcutaneous_fat")
        assert (heavy.labels.array == fat).sum() > 2 * (thin.labels.array == fat).sum()
        assert heavy.details["subcutaneous_fat_anterior_mm"] > thin.details["subcutaneous_fat_anterior_mm"]


def _tumour_contact(ph: CTPhantom) -> float:
    """Fraction of celiac-trunk surface voxels with a tumour voxel among their 6 neighbours."""
    lab = ph.labels.array
    trunk = lab == label_of("celiac_trunk")
    # the trunk proper: celiac voxels within 25 mm of the origin
    idx = np.argwhere(trunk)
    d = np.linalg.norm(ph.labels.index_to_lps(idx) - np.asarray(ph.landmarks["celiac_origin"]), axis=1)
    near = np.zeros_like(trunk)
    near[tuple(idx[d <= 25.0].T)] = True
    surface = near & ~ndimage.binary_erosion(near)
    touching = ndimage.binary_dilation(lab == label_of("tumour"))
    return float((surface & touching).sum() / max(surface.sum(), 1))


@pytest.mark.slow
def test_encasement_increases_tumour_contact():
    for seed in (0, 2, 4):
        contact = []
        for frac in (0.0, 0.3, 0.9):
            ph = make_ct_phantom(PhantomParams(seed=seed, tumour_encasement=frac), spacing_mm=(4, 4, 4))
            has_tumour = (ph.labels.array == label_of("tumour")).any()
            assert has_tumour == (frac > 0)
            contact.append(_tumour_contact(ph))
        assert contact[0] == 0.0
        # the trunk's ends (at the aorta and the branching) cannot be encased: contact < 1
        assert 0.15 < contact[1] < 0.6 and contact[2] > contact[1] + 0.15, (seed, contact)


def test_params_are_validated():
    with pytest.raises(PlannerError, match="bmi"):
        PhantomParams(seed=0, bmi=80)
    with pytest.raises(PlannerError, match="encasement"):
        PhantomParams(seed=0, tumour_encasement=1.5)
    with pytest.raises(PlannerError, match="celiac_level"):
        PhantomParams(seed=0, celiac_level="L3")
    with pytest.raises(PlannerError, match="spleen_scale=3"):
        PhantomParams(seed=0, spleen_scale=3)
    with pytest.raises(PlannerError, match="aortic_wall_mm=6"):
        PhantomParams(seed=0, aortic_wall_mm=6)
    with pytest.raises(PlannerError, match="spleen_wrap=1.5"):
        PhantomParams(seed=0, spleen_wrap=1.5)
    with pytest.raises(PlannerError, match="diaphragm_rise_mm=70"):
        PhantomParams(seed=0, diaphragm_rise_mm=70)
    with pytest.raises(PlannerError, match="upper_ribs=4"):
        PhantomParams(seed=0, upper_ribs=4)
    with pytest.raises(PlannerError, match="stomach_food=-0.1"):
        PhantomParams(seed=0, stomach_food=-0.1)
    with pytest.raises(PlannerError, match="aorta_on_spine=2"):
        PhantomParams(seed=0, aorta_on_spine=2)
    with pytest.raises(PlannerError, match="spacing"):
        make_ct_phantom(0, spacing_mm=(0, 3, 3))


def test_spleen_scale_grows_the_spleen_and_leaves_the_distant_anatomy():
    """A larger spleen takes room from its neighbours only; the right side is the same phantom."""
    sizes, right = [], []
    for scale in (0.8, 1.0, 1.6):
        ph = make_ct_phantom(PhantomParams(seed=3, spleen_scale=scale), spacing_mm=(4, 4, 4))
        lab = ph.labels.array
        sizes.append(int((lab == label_of("spleen")).sum()))
        right.append(lab == label_of("kidney_right"))
    assert sizes[0] < 0.85 * sizes[1] and sizes[2] > 1.8 * sizes[1], sizes
    assert np.array_equal(right[0], right[1]) and np.array_equal(right[1], right[2])
    default = make_ct_phantom(3, spacing_mm=(4, 4, 4)).labels.array
    assert int((default == label_of("spleen")).sum()) == sizes[1], "scale 1 is the phantom without the setting"


def test_spleen_wrap_lays_the_spleen_along_the_left_wall_and_leaves_the_rest():
    """A wrapping spleen adds a shell under the left posterolateral wall, round towards the front
    as ``wrap`` grows; the right side and the spine are the same phantom."""
    from scipy import ndimage

    phantoms = {wrap: make_ct_phantom(PhantomParams(seed=3, spleen_wrap=wrap), spacing_mm=(4, 4, 4))
                for wrap in (0.0, 0.5, 1.0)}
    labels = {wrap: ph.labels.array for wrap, ph in phantoms.items()}
    spleen = {wrap: lab == label_of("spleen") for wrap, lab in labels.items()}
    sizes = [int(spleen[w].sum()) for w in (0.0, 0.5, 1.0)]
    assert sizes[0] < sizes[1] < sizes[2] and sizes[2] > 2 * sizes[0], sizes
    default = make_ct_phantom(3, spacing_mm=(4, 4, 4)).labels.array
    assert np.array_equal(default, labels[0.0]), "wrap 0 is the phantom without the setting"
    for name in ("kidney_right", "vertebra_T12", "aorta"):
        assert np.array_equal(labels[0.0] == label_of(name), labels[1.0] == label_of(name)), name
    ph = phantoms[1.0]
    # on the slice through the T12 body the spleen touches the body wall behind and beside it
    k = int(round(float(ph.image.lps_to_index(np.array([0.0, 0.0, ph.landmarks["T12"][2]]))[0])))
    body_wall = np.isin(labels[1.0][k], [label_of(n) for n in ("muscle", "ribs", "subcutaneous_fat")])
    touching = spleen[1.0][k] & ndimage.binary_dilation(body_wall, iterations=2)
    assert touching.sum() > 10, "the wrapped spleen lies against the wall"
    ys, xs = np.nonzero(spleen[1.0][k])
    centre = ph.image.lps_to_index(np.array([ph.landmarks["T12"]]))[0]
    assert (xs > centre[2]).all(), "the spleen stays on the left"
    front = lambda m: np.nonzero(m.any(axis=1))[0].min()  # noqa: E731 - most anterior row
    assert front(spleen[1.0][k]) < front(spleen[0.0][k]) - 3, "wrap 1 reaches further forward"


def test_diaphragm_rise_lifts_the_lung_bases_and_leaves_the_rest():
    """A higher diaphragm takes lung out of the lower slices and keeps the skeleton and kidneys."""
    low = make_ct_phantom(PhantomParams(seed=5), spacing_mm=(4, 4, 4))
    high = make_ct_phantom(PhantomParams(seed=5, diaphragm_rise_mm=50.0), spacing_mm=(4, 4, 4))
    lung_slices = [np.nonzero((ph.labels.array == label_of("lungs")).any(axis=(1, 2)))[0] for ph in (low, high)]
    assert lung_slices[1].min() >= lung_slices[0].min() + 50 / 4 - 2, "lung bases 50 mm higher"
    k = int(round(float(low.image.lps_to_index(np.array([0.0, 0.0, low.landmarks["T12"][2]]))[0])))
    assert (low.labels.array[k] == label_of("lungs")).any() and not (high.labels.array[k] == label_of("lungs")).any()
    assert high.details["costophrenic_recess_z_mm"] > low.details["costophrenic_recess_z_mm"] + 49
    for name in ("vertebra_T12", "kidney_left", "kidney_right", "aorta"):
        assert np.array_equal(low.labels.array == label_of(name), high.labels.array == label_of(name)), name


def test_upper_ribs_close_the_rib_cage_round_the_upper_abdomen():
    """Ribs 7-9 add bone and anterior costal cartilage at T11 without moving the organs."""
    plain = make_ct_phantom(PhantomParams(seed=6), spacing_mm=(3, 3, 3))
    caged = make_ct_phantom(PhantomParams(seed=6, upper_ribs=3), spacing_mm=(3, 3, 3))
    ribs0, ribs3 = (ph.labels.array == label_of("ribs") for ph in (plain, caged))
    assert ribs3.sum() > 1.5 * ribs0.sum() and (ribs0 & ~ribs3).sum() == 0
    k = int(round(float(plain.image.lps_to_index(np.array([0.0, 0.0, plain.landmarks["T11"][2]]))[0])))
    centre_row = plain.image.lps_to_index(np.array([plain.landmarks["T11"]]))[0][1]
    rows = np.nonzero(ribs3[k])[0]
    assert (rows < centre_row - 20).sum() > (np.nonzero(ribs0[k])[0] < centre_row - 20).sum() + 10, \
        "ribs 60 mm and more in front of the vertebral body"
    added = ribs3 & ~ribs0
    hu = caged.image.array[added].astype(float)
    assert 80 < np.median(hu) < 220, "the added ribs' anterior ends are cartilage, not cortical bone"
    for name in ("spleen", "liver", "aorta", "kidney_left"):
        a, b = (ph.labels.array == label_of(name) for ph in (plain, caged))
        assert (a ^ b).sum() <= 0.005 * a.sum(), name


def test_stomach_food_mottles_the_dependent_stomach_only():
    """Food changes the stomach's image (denser and mottled behind, fluid in front), not its label
    or anything outside it."""
    fasting = make_ct_phantom(PhantomParams(seed=7), spacing_mm=(3, 3, 3))
    fed = make_ct_phantom(PhantomParams(seed=7, stomach_food=0.7), spacing_mm=(3, 3, 3))
    lab = fasting.labels.array
    assert np.array_equal(lab, fed.labels.array)
    stomach = lab == label_of("stomach")
    hu0, hu1 = fasting.image.array.astype(float), fed.image.array.astype(float)
    soft0, soft1 = stomach & (hu0 > -200), stomach & (hu1 > -200)
    assert np.percentile(hu1[soft1], 75) > np.percentile(hu0[soft0], 75) + 15, "food is denser than fluid"
    assert hu1[soft1].std() > 1.3 * hu0[soft0].std(), "food is mottled"
    from scipy import ndimage

    far = ndimage.distance_transform_edt(~stomach, sampling=(3, 3, 3)) > 6
    assert np.array_equal(hu0[far], hu1[far])


def _aorta_to_vertebral_body_mm(ph, level: str) -> float:
    """Smallest in-plane distance (mm) from the aorta to the vertebral body on ``level``'s mid slice."""
    from scipy import ndimage

    k = int(round(float(ph.image.lps_to_index(np.array([ph.landmarks[level]]))[0][0])))
    lab = ph.labels.array[k]
    bone_free = lab != label_of(f"vertebra_{level}")
    dist = ndimage.distance_transform_edt(bone_free, sampling=ph.image.spacing[1:])
    return float(dist[lab == label_of("aorta")].min())


def test_aorta_on_spine_closes_the_fat_gap_behind_the_aorta():
    """``aorta_on_spine`` moves the aorta back onto the vertebral bodies (no fat between them) and
    leaves its size, the spine and the kidneys as they were."""
    for seed in (3, 8):
        plain = make_ct_phantom(PhantomParams(seed=seed), spacing_mm=(2, 1.5, 1.5))
        on_spine = make_ct_phantom(PhantomParams(seed=seed, aorta_on_spine=1.0), spacing_mm=(2, 1.5, 1.5))
        for level in ("T12", "L1"):
            gap_plain = _aorta_to_vertebral_body_mm(plain, level)
            gap_on = _aorta_to_vertebral_body_mm(on_spine, level)
            assert gap_plain >= 2.5 and gap_on <= 1.6, (seed, level, gap_plain, gap_on)
        sizes = [int((ph.labels.array == label_of("aorta")).sum()) for ph in (plain, on_spine)]
        assert abs(sizes[1] - sizes[0]) < 0.05 * sizes[0], sizes
        for name in ("vertebra_T12", "kidney_left", "kidney_right"):
            a, b = (ph.labels.array == label_of(name) for ph in (plain, on_spine))
            assert (a ^ b).sum() <= 0.01 * a.sum(), name


def test_aortic_wall_darkens_the_aortic_rim_only():
    """A wall keeps the aorta's label and lumen, darkens its outer few millimetres to soft tissue
    (with bright calcified patches), and leaves the branches' ostia and the rest of the image alone."""
    from scipy import ndimage

    plain = make_ct_phantom(PhantomParams(seed=4), spacing_mm=(1.5, 1.5, 1.5))
    walled = make_ct_phantom(PhantomParams(seed=4, aortic_wall_mm=3.0), spacing_mm=(1.5, 1.5, 1.5))
    lab = plain.labels.array
    assert np.array_equal(lab, walled.labels.array), "the label keeps the outer contour"
    aorta = lab == label_of("aorta")
    depth = ndimage.distance_transform_edt(aorta, sampling=(1.5, 1.5, 1.5))
    hu0, hu1 = plain.image.array.astype(float), walled.image.array.astype(float)
    rim, core = aorta & (depth <= 1.5), aorta & (depth >= 6.0)
    assert np.median(hu0[rim]) > 120 and np.median(hu1[rim]) < 60, "outer wall is soft tissue"
    assert (hu1[rim] > 300).mean() > 0.005, "some of the wall is calcified"
    assert abs(np.median(hu1[core]) - np.median(hu0[core])) < 5, "the lumen keeps its contrast"
    far = ndimage.distance_transform_edt(~aorta, sampling=(1.5, 1.5, 1.5)) > 10
    assert np.array_equal(hu0[far], hu1[far]), "nothing away from the aorta changes"
    celiac = lab == label_of("celiac_trunk")
    assert abs(np.median(hu1[celiac]) - np.median(hu0[celiac])) < 10, "branches keep their lumen"


def test_high_bmi_widens_the_field_of_view():
    ph = make_ct_phantom(PhantomParams(seed=2, bmi=42.0), spacing_mm=(8, 4, 4))
    lab = ph.labels.array
    assert not lab[:, :, 0].any() and not lab[:, :, -1].any()  # body never cut at the edges
    assert not lab[:, 0, :].any() and not lab[:, -1, :].any()


def test_import_is_light():
    code = "import sys, segmentation.phantom_ct; print('torch' in sys.modules, 'monai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
