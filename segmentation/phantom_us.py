"""Seeded simulator of a supraclavicular brachial plexus ultrasound cine (numpy/scipy only).

The view is the standard in-plane supraclavicular scan (linear probe in the
supraclavicular fossa, coronal-oblique plane): skin and subcutaneous fat at the top,
the anechoic round subclavian artery, the brachial plexus trunks/divisions as a cluster
of hypoechoic round fascicles with bright rims ("bunch of grapes") lateral and
superficial to the artery (image left = lateral), the first rib as a bright curved line
deep to both with an acoustic shadow below it, and the bright pleural line medial to
the rib with lung below it.

Image formation, in order (each step is a plain array operation):

1. an echogenicity map (mean backscatter per tissue) from the geometry;
2. fully developed speckle: a complex Gaussian field low-pass filtered by an anisotropic
   point-spread function (short axially, longer laterally); its magnitude is Rayleigh
   distributed and multiplies the echogenicity. Consecutive frames share part of their
   speckle (the probe moves little between frames);
3. transmission: round-trip attenuation ``exp(-2 * alpha * f * depth)`` (alpha 0.5
   dB/cm/MHz at 12 MHz), the shadow under bone (most energy reflected at the rib
   surface) and posterior enhancement under the fluid-filled artery;
4. time-gain compensation that undoes most (not all) of the depth attenuation, then log
   compression to 8 bits (60 dB dynamic range).

Across the sweep the probe slides laterally by ~1.5 mm and the artery pulsates (its
diameter follows the cardiac cycle, +/-7 % at 72 beats/min). Labels use the
anatomy vocabulary: ``brachial_plexus`` (target), ``blood_vessel`` (artery),
``ribs`` (first rib) and ``lungs`` (pleura and lung).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from planner.anatomy import label_of
from planner.volume import Volume

#: round-trip attenuation coefficient in dB/cm/MHz (soft tissue ~0.5 one-way)
ALPHA_DB_CM_MHZ = 0.5
CENTRE_FREQUENCY_MHZ = 12.0
DYNAMIC_RANGE_DB = 60.0
#: relative change of the arterial radius over the cardiac cycle (+/-)
PULSATION = 0.07
#: envelope value shown as white (sets overall brightness: muscle ~ mid-grey)
DISPLAY_REFERENCE = 30.0
#: receiver noise relative to white (-58 dB): what fills shadows and the artery lumen
ELECTRONIC_NOISE = 10.0 ** (-58.0 / 20.0)


@dataclass(frozen=True)
class USParams:
    """Parameters of one simulated cine; anatomy varies with ``seed``."""

    seed: int
    frames: int = 20
    rows: int = 256
    columns: int = 256
    pixel_mm: float = 0.15
    frame_time_ms: float = 50.0
    heart_rate_bpm: float = 72.0
    #: fraction of depth attenuation the time-gain compensation removes
    tgc_compensation: float = 0.85
    #: total lateral probe travel over the sweep (mm)
    sweep_mm: float = 1.5


@dataclass(frozen=True)
class USAnatomy:
    """Geometry drawn from the seed, in mm: x lateral (0 = image left), y depth."""

    artery_centre: tuple[float, float]
    artery_radius: float
    fascicles: tuple[tuple[float, float, float], ...]  # (x, y, radius)
    plexus_centre: tuple[float, float]
    plexus_axes: tuple[float, float]
    rib_centre_x: float
    rib_half_width: float
    rib_top: float
    rib_curvature: float
    pleura_depth: float
    skin_mm: float
    fat_mm: float


@dataclass(frozen=True)
class USPhantom:
    """A simulated cine: ``image`` uint8 frames as z, ``labels`` on the same grid."""

    image: Volume
    labels: Volume
    params: USParams
    anatomy: USAnatomy
    #: artery diameter per frame (mm)
    artery_diameters_mm: tuple[float, ...] = field(default=())


def draw_anatomy(params: USParams, rng: np.random.Generator) -> USAnatomy:
    """Random but plausible geometry of the supraclavicular view."""
    width = params.columns * params.pixel_mm
    depth = params.rows * params.pixel_mm
    artery_radius = rng.uniform(2.6, 3.4)
    artery = (width * rng.uniform(0.56, 0.64), depth * rng.uniform(0.40, 0.48))
    # plexus: lateral (image left) and superficial to the artery
    plexus = (artery[0] - rng.uniform(7.0, 9.5), artery[1] - rng.uniform(2.5, 4.5))
    axes = (rng.uniform(4.5, 5.5), rng.uniform(3.0, 3.8))
    fascicles: list[tuple[float, float, float]] = []
    for _ in range(400):
        if len(fascicles) >= int(rng.integers(6, 9)):
            break
        r = rng.uniform(0.8, 1.3)
        ang, rad = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0, 1))
        x = plexus[0] + (axes[0] - r - 0.3) * rad * np.cos(ang)
        y = plexus[1] + (axes[1] - r - 0.3) * rad * np.sin(ang)
        if all(np.hypot(x - fx, y - fy) > r + fr + 0.25 for fx, fy, fr in fascicles):
            fascicles.append((x, y, r))
    rib_top = artery[1] + artery_radius + rng.uniform(2.0, 3.5)
    rib_centre_x = (plexus[0] + artery[0]) / 2.0 + rng.uniform(-1.0, 1.0)
    return USAnatomy(
        artery_centre=artery,
        artery_radius=artery_radius,
        fascicles=tuple(fascicles),
        plexus_centre=plexus,
        plexus_axes=axes,
        rib_centre_x=rib_centre_x,
        rib_half_width=rng.uniform(8.0, 10.0),
        rib_top=rib_top,
        rib_curvature=rng.uniform(0.012, 0.025),
        pleura_depth=rib_top + rng.uniform(0.5, 2.0),
        skin_mm=rng.uniform(0.8, 1.2),
        fat_mm=rng.uniform(2.5, 5.0),
    )


def _frame_geometry(anatomy: USAnatomy, x: np.ndarray, y: np.ndarray, artery_radius: float
                    ) -> dict[str, np.ndarray]:
    """Boolean masks of every tissue for one frame (``x``, ``y`` in mm grids)."""
    ax, ay = anatomy.artery_centre
    artery = np.hypot(x - ax, y - ay) <= artery_radius
    artery_wall = (np.hypot(x - ax, y - ay) <= artery_radius + 0.45) & ~artery
    fascicle = np.zeros(x.shape, bool)
    rim = np.zeros(x.shape, bool)
    for fx, fy, fr in anatomy.fascicles:
        d = np.hypot(x - fx, y - fy)
        fascicle |= d <= fr
        rim |= (d > fr) & (d <= fr + 0.3)
    px, py = anatomy.plexus_centre
    a, b = anatomy.plexus_axes
    plexus = ((x - px) / a) ** 2 + ((y - py) / b) ** 2 <= 1.0
    # first rib: a band whose upper surface curves down away from its crest
    rib_surface = anatomy.rib_top + anatomy.rib_curvature * (x - anatomy.rib_centre_x) ** 2
    over_rib = np.abs(x - anatomy.rib_centre_x) <= anatomy.rib_half_width
    rib = over_rib & (y >= rib_surface) & (y <= rib_surface + 1.2)
    below_rib = over_rib & (y > rib_surface)
    medial_of_rib = x > anatomy.rib_centre_x + anatomy.rib_half_width
    pleura_line = medial_of_rib & (np.abs(y - anatomy.pleura_depth) <= 0.35)
    lung = medial_of_rib & (y > anatomy.pleura_depth + 0.35)
    skin = y <= anatomy.skin_mm
    fat = (y > anatomy.skin_mm) & (y <= anatomy.skin_mm + anatomy.fat_mm)
    return {"artery": artery, "artery_wall": artery_wall, "fascicle": fascicle, "rim": rim,
            "plexus": plexus, "rib": rib, "rib_surface": rib_surface, "below_rib": below_rib,
            "pleura_line": pleura_line, "lung": lung, "skin": skin, "fat": fat}


def _echogenicity(masks: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
                  texture: np.ndarray) -> np.ndarray:
    """Mean backscatter amplitude per pixel (1 = average muscle)."""
    echo = np.full(x.shape, 0.8) * texture  # muscle (scalenes, omohyoid) with fibrillar texture
    echo[masks["fat"]] = 0.35
    echo[masks["skin"]] = 2.2
    fascia = np.abs(y - (y[masks["fat"]].max() if masks["fat"].any() else 0.0)) < 0.3
    echo[fascia] = 1.8
    plexus_sheath = masks["plexus"] & ~masks["fascicle"]
    echo[plexus_sheath] = 0.9
    echo[masks["rim"]] = 2.0
    echo[masks["fascicle"]] = 0.22
    echo[masks["artery_wall"]] = 2.4
    echo[masks["artery"]] = 0.015
    echo[masks["lung"]] = 0.9
    echo[masks["pleura_line"]] = 4.0
    echo[masks["rib"]] = 5.0
    return echo


def _transmission(masks: dict[str, np.ndarray], y: np.ndarray, pixel_mm: float) -> np.ndarray:
    """Fraction of energy reaching each pixel and returning: attenuation, shadow, enhancement."""
    depth_cm = y / 10.0
    attenuation_db = 2.0 * ALPHA_DB_CM_MHZ * CENTRE_FREQUENCY_MHZ * depth_cm
    transmission = 10.0 ** (-attenuation_db / 20.0)
    # acoustic shadow: energy below the bony surface is ~1 % of what arrived
    below_bone = masks["below_rib"] & ~masks["rib"]
    transmission = np.where(below_bone, transmission * 0.01, transmission)
    # posterior enhancement: blood attenuates far less than tissue, so columns under the
    # artery get back the attenuation of the artery's chord length
    chord_mm = masks["artery"].sum(axis=0, keepdims=True) * pixel_mm
    below_artery = np.cumsum(masks["artery"], axis=0) > 0
    gain_db = 2.0 * ALPHA_DB_CM_MHZ * CENTRE_FREQUENCY_MHZ * chord_mm / 10.0 * 0.8
    transmission = np.where(below_artery & ~masks["artery"], transmission * 10.0 ** (gain_db / 20.0), transmission)
    # pleura: aerated lung reflects almost everything; below the line only reverberation
    below_pleura = masks["lung"]
    transmission = np.where(below_pleura, transmission * 0.25, transmission)
    return transmission


def _speckle(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Complex Gaussian field filtered by the PSF (axial sigma 1 px, lateral 2.5 px)."""
    field = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    real = ndimage.gaussian_filter(field.real, sigma=(1.0, 2.5))
    imag = ndimage.gaussian_filter(field.imag, sigma=(1.0, 2.5))
    return real + 1j * imag


def make_us_phantom(params: USParams | int) -> USPhantom:
    """Simulate a supraclavicular cine; same ``params`` (or seed) give the same frames."""
    if isinstance(params, int):
        params = USParams(seed=params)
    rng = np.random.default_rng(params.seed)
    anatomy = draw_anatomy(params, rng)
    rows, cols, px = params.rows, params.columns, params.pixel_mm
    y0, x0 = np.mgrid[0:rows, 0:cols].astype(np.float64)
    y0 = (y0 + 0.5) * px
    x0 = (x0 + 0.5) * px
    # fibrillar muscle texture: horizontally elongated low-frequency variation
    texture = ndimage.gaussian_filter(rng.standard_normal((rows, cols)), sigma=(1.5, 12.0))
    texture = np.clip(1.0 + 2.5 * texture, 0.4, 1.8)
    speckle = _speckle(rng, (rows, cols))
    carry = 0.6  # share of speckle kept between consecutive frames
    phase0 = rng.uniform(0, 2 * np.pi)
    images = np.empty((params.frames, rows, cols), np.uint8)
    labels = np.zeros((params.frames, rows, cols), np.uint8)
    diameters = []
    plexus_label, vessel_label = label_of("brachial_plexus"), label_of("blood_vessel")
    rib_label, lung_label = label_of("ribs"), label_of("lungs")
    noise_floor = 10.0 ** (-DYNAMIC_RANGE_DB / 20.0)
    for t in range(params.frames):
        time_s = t * params.frame_time_ms / 1000.0
        pulse = np.sin(2 * np.pi * params.heart_rate_bpm / 60.0 * time_s + phase0)
        radius = anatomy.artery_radius * (1.0 + PULSATION * pulse)
        diameters.append(2.0 * radius)
        shift = params.sweep_mm * (t / max(1, params.frames - 1) - 0.5)
        x = x0 + shift  # probe moves laterally: anatomy slides the other way in the image
        masks = _frame_geometry(anatomy, x, y0, radius)
        echo = _echogenicity(masks, x, y0, np.roll(texture, int(round(-shift / px)), axis=1))
        if t:
            speckle = carry * speckle + np.sqrt(1 - carry**2) * _speckle(rng, (rows, cols))
        rayleigh = np.abs(speckle) / np.sqrt(np.mean(np.abs(speckle) ** 2))
        envelope = echo * rayleigh * _transmission(masks, y0, px)
        tgc_db = params.tgc_compensation * 2.0 * ALPHA_DB_CM_MHZ * CENTRE_FREQUENCY_MHZ * y0 / 10.0
        envelope = envelope * 10.0 ** (tgc_db / 20.0)
        noise = np.abs(rng.standard_normal((rows, cols)) + 1j * rng.standard_normal((rows, cols)))
        envelope = envelope + ELECTRONIC_NOISE * DISPLAY_REFERENCE * noise
        db = 20.0 * np.log10(np.maximum(envelope / DISPLAY_REFERENCE, noise_floor))
        images[t] = np.clip(np.rint((db + DYNAMIC_RANGE_DB) / DYNAMIC_RANGE_DB * 255.0), 0, 255)
        frame_labels = labels[t]
        frame_labels[masks["lung"] | masks["pleura_line"]] = lung_label
        frame_labels[masks["rib"]] = rib_label
        frame_labels[masks["plexus"]] = plexus_label
        frame_labels[masks["artery"]] = vessel_label
    spacing = (1.0, px, px)  # z is frame (time), spacing 1 as planner.dicom_series reads cines
    image = Volume(array=images, spacing=spacing, origin=(0.0, 0.0, 0.0), modality="US")
    return USPhantom(image=image, labels=image.with_array(labels), params=params, anatomy=anatomy,
                     artery_diameters_mm=tuple(diameters))
