"""Lesions of the phantom: where they go, what they look like, and their partial-volume rendering.

Each lesion is a :class:`LesionParams` (plain JSON-friendly values) drawn by :func:`sample_lesions`;
:func:`render_lesion` turns it into fraction maps on the output grid by supersampling each voxel, so
that a lesion's mask volume matches its true volume up to partial volume at its border.

Whether a lesion is active is drawn independently of every other pre-contrast attribute (size, shape,
location, contrast, black hole): at signature strength 0 nothing in the pre-contrast images tells active
from chronic lesions.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, replace
from importlib import resources

import numpy as np
from scipy import ndimage

from gdfree.phantom.anatomy import SubjectAnatomy
from gdfree.types import spacing_from_affine

__all__ = [
    "LesionLibrary", "LesionParams", "RenderedLesion", "lateral_ventricles", "lesion_library", "render_lesion",
    "sample_lesions",
]  # fmt: skip

LOCATIONS = ("periventricular", "juxtacortical", "deep", "infratentorial")
PATTERNS = ("nodular", "ring", "open_ring")


@dataclass(frozen=True, eq=False)
class LesionLibrary:
    """Real lesion shapes: bool crops with axes along +x/+y/+z at 1 mm, and their MNI centroids."""

    masks: tuple[np.ndarray, ...]
    centroid_mm: np.ndarray
    source: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.masks)


@functools.lru_cache(maxsize=1)
def lesion_library() -> LesionLibrary:
    """The shipped library of real lesion shapes (see LESION_SHAPES.md for source and licence)."""
    with resources.files("gdfree.phantom").joinpath("lesion_shapes.npz").open("rb") as fh:
        data = np.load(fh, allow_pickle=False)
        bits, offsets, shapes = data["bits"], data["offsets"], data["shapes"]
        masks = tuple(
            np.unpackbits(bits[offsets[i] : offsets[i + 1]])[: int(np.prod(shape))].reshape(shape).astype(bool)
            for i, shape in enumerate(shapes)
        )
        return LesionLibrary(masks, np.asarray(data["centroid_mm"]), tuple(str(s) for s in data["source"]))


@dataclass
class LesionParams:
    """Everything drawn for one lesion (mm and RAS+ world coordinates of the subject's grid)."""

    id: int
    centre_mm: list[float]
    location: str
    shape: str  # "ovoid" | "real"
    semi_axes_mm: list[float] | None  # ovoid
    axes: list[list[float]] | None  # ovoid: 3x3, columns are the unit axis directions
    library_index: int | None  # real
    bounding_radius_mm: float
    contrast_jitter: dict[str, float]  # modality -> multiplier of the lesion/WM contrast
    black_hole: bool
    texture_seed: int
    active: bool = False
    pattern: str | None = None  # enhancement pattern if active
    enhance_inner: float = 0.0  # enhanced shell in normalised radius rho (0 centre, 1 border)
    enhance_outer: float = 0.0
    enhance_gain: float = 0.0  # post-Gd multiplicative gain of enhancing tissue
    opening_dir: list[float] | None = None  # open ring: unit vector of the opening
    volume_mm3: float = 0.0  # filled in after rendering: sum of partial-volume fractions
    enhancing_volume_mm3: float = 0.0
    mask_voxels: int = 0
    scale: float = 1.0  # linear size relative to the drawn lesion (a prior session's smaller or larger lesion)
    contrast: dict[str, float] | None = None  # modality -> lesion/WM ratio drawn from real lesions (no jitter)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class RenderedLesion:
    """Fraction maps of one lesion inside ``slices`` of the output grid (float32 in [0, 1]).

    ``lesion``: fraction of each voxel inside the lesion; ``enhancing``: fraction that enhances after Gd;
    ``halo``: perilesional weight (1 at the halo radius, Gaussian fall-off, outside the lesion only);
    ``rho``: mean normalised radius of the lesion part of each voxel (0 centre, 1 border).
    """

    slices: tuple[slice, slice, slice]
    lesion: np.ndarray
    enhancing: np.ndarray
    halo: np.ndarray
    rho: np.ndarray


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-9 else np.array([0.0, 0.0, 1.0])


def _random_rotation(rng: np.random.Generator, first_axis: np.ndarray | None) -> np.ndarray:
    a = _unit(first_axis) if first_axis is not None else _unit(rng.standard_normal(3))
    b = _unit(np.cross(a, _unit(rng.standard_normal(3))))
    return np.stack([a, b, np.cross(a, b)], axis=1)


@dataclass(frozen=True, eq=False)
class _Sites:
    """Candidate lesion sites of one subject (voxel indices per location category) and helper fields."""

    categories: dict[str, np.ndarray]
    vent_dist: np.ndarray  # mm to lateral-ventricle CSF
    gm_dist: np.ndarray  # mm to GM-dominant voxels
    vent_near: np.ndarray  # (3, X, Y, Z) index of nearest ventricle voxel
    gm_near: np.ndarray


def lateral_ventricles(anat: SubjectAnatomy) -> np.ndarray:
    """CSF-dominant voxels in the box of the lateral ventricles (MNI x within 28 mm, y -50..25, z -2..32)."""
    t = anat.template_mm
    central = (np.abs(t[0]) < 28) & (t[1] > -50) & (t[1] < 25) & (t[2] > -2) & (t[2] < 32)
    return (anat.maps.csf > 0.5) & central


def _sites(anat: SubjectAnatomy) -> _Sites:
    m = anat.maps
    sp = m.spacing_mm
    t = anat.template_mm
    vent = lateral_ventricles(anat)
    if not vent.any():
        vent = m.csf > 0.5
    gm_dom = m.gm > np.maximum(m.wm, m.csf)
    vent_dist, vent_near = ndimage.distance_transform_edt(~vent, sampling=sp, return_indices=True)
    gm_dist, gm_near = ndimage.distance_transform_edt(~gm_dom, sampling=sp, return_indices=True)
    wm_core = m.wm >= 0.8
    infra = wm_core & (t[2] < -22)
    supra = wm_core & ~infra
    peri = supra & (vent_dist <= 10.0)
    juxta = supra & ~peri & (gm_dist <= max(3.0, 1.5 * sp))
    deep = supra & ~peri & ~juxta
    cats = {"periventricular": peri, "juxtacortical": juxta, "deep": deep, "infratentorial": infra}
    return _Sites({k: np.argwhere(v) for k, v in cats.items()}, vent_dist, gm_dist, vent_near, gm_near)


def _gradient_at(field_: np.ndarray, vox: np.ndarray, spacing_mm: float) -> np.ndarray:
    """np.gradient of ``field_`` at one voxel only (central differences, one-sided at the edges)."""
    g = np.zeros(3)
    for axis in range(3):
        lo, hi = vox.copy(), vox.copy()
        lo[axis] = max(vox[axis] - 1, 0)
        hi[axis] = min(vox[axis] + 1, field_.shape[axis] - 1)
        g[axis] = (field_[tuple(hi)] - field_[tuple(lo)]) / (max(hi[axis] - lo[axis], 1) * spacing_mm)
    return g


def _world(anat: SubjectAnatomy, vox: np.ndarray) -> np.ndarray:
    a = anat.maps.affine
    return a[:3, :3] @ vox + a[:3, 3]


def _vox(anat: SubjectAnatomy, world: np.ndarray) -> np.ndarray:
    inv = np.linalg.inv(anat.maps.affine)
    return inv[:3, :3] @ world + inv[:3, 3]


def _template_to_subject(anat: SubjectAnatomy, target_mm: np.ndarray, iterations: int = 12) -> np.ndarray:
    """Subject world point x with T(x) ~= target (fixed point on the smooth, near-identity T)."""
    x = target_mm.astype(np.float64).copy()
    for _ in range(iterations):
        v = _vox(anat, x)[:, None]
        tx = np.array([ndimage.map_coordinates(anat.template_mm[i], v, order=1, mode="nearest")[0] for i in range(3)])
        x = x + (target_mm - tx)
    return x


def sample_lesions(
    rng: np.random.Generator,
    anat: SubjectAnatomy,
    *,
    n_lesions: int,
    n_active: int,
    location_probs: dict[str, float],
    real_shape_fraction: float,
    diameter_mm: tuple[float, float],
    halo_radius_mm: float,
    halo_width_mm: float,
    black_hole_prob: float,
    pattern_probs: dict[str, float],
    modalities: tuple[str, ...],
    min_gap_mm: float = 2.0,
    max_tries: int = 400,
) -> list[LesionParams]:
    """Place up to ``n_lesions`` non-overlapping lesions and mark ``n_active`` of them, chosen at random.

    Lesions whose placement fails after ``max_tries`` draws are dropped (the list may be shorter).
    """
    lib = lesion_library() if real_shape_fraction > 0 else None
    sites = _sites(anat)
    names = [k for k in LOCATIONS if len(sites.categories[k]) > 0]
    probs = np.array([location_probs.get(k, 0.0) for k in names], dtype=np.float64)
    if probs.sum() <= 0:
        raise ValueError(f"location_probs {location_probs}: no probability on a location with WM sites")
    probs /= probs.sum()
    placed: list[LesionParams] = []
    margin = halo_radius_mm + 3 * halo_width_mm
    tries = 0
    while len(placed) < n_lesions and tries < max_tries:
        tries += 1
        lesion = _draw_one(rng, anat, sites, lib, names, probs, real_shape_fraction, diameter_mm, len(placed) + 1)
        if lesion is None:
            continue
        c = np.asarray(lesion.centre_mm)
        if any(
            np.linalg.norm(c - np.asarray(o.centre_mm))
            < lesion.bounding_radius_mm + o.bounding_radius_mm + 2 * margin + min_gap_mm
            for o in placed
        ):
            continue
        lesion.contrast_jitter = {m: float(np.round(np.exp(0.08 * rng.standard_normal()), 4)) for m in modalities}
        if "T1w" in modalities and "T1gd" in modalities:  # one tissue, imaged before and after Gd
            lesion.contrast_jitter["T1gd"] = lesion.contrast_jitter["T1w"]
        lesion.black_hole = bool(rng.random() < black_hole_prob)
        lesion.texture_seed = int(rng.integers(2**31))
        placed.append(lesion)
    active_ids = (rng.choice(len(placed), size=min(n_active, len(placed)), replace=False) if placed
                  else np.zeros(0, int))  # fmt: skip
    pnames = list(pattern_probs)
    pprobs = np.array([pattern_probs[k] for k in pnames], dtype=np.float64)
    for i in sorted(int(a) for a in active_ids):
        _make_active(rng, placed[i], anat, sites, pnames, pprobs / pprobs.sum())
    return placed


def _draw_one(
    rng: np.random.Generator,
    anat: SubjectAnatomy,
    sites: _Sites,
    lib: LesionLibrary | None,
    names: list[str],
    probs: np.ndarray,
    real_fraction: float,
    diameter_mm: tuple[float, float],
    lesion_id: int,
) -> LesionParams | None:
    sp = anat.maps.spacing_mm
    if lib is not None and rng.random() < real_fraction:
        index = int(rng.integers(len(lib)))
        centre = _template_to_subject(anat, lib.centroid_mm[index])
        vox = np.round(_vox(anat, centre)).astype(int)
        if np.any(vox < 0) or np.any(vox >= np.asarray(anat.maps.shape)) or anat.maps.wm[tuple(vox)] < 0.3:
            return None
        mask = lib.masks[index]
        pts = np.argwhere(mask) - ndimage.center_of_mass(mask)
        radius = float(np.sqrt((pts**2).sum(axis=1)).max()) + 0.87
        return LesionParams(
            lesion_id, np.round(centre, 3).tolist(), "library", "real", None, None, index, round(radius, 3),
            {}, False, 0,
        )  # fmt: skip
    location = str(rng.choice(names, p=probs))
    cands = sites.categories[location]
    vox = cands[int(rng.integers(len(cands)))]
    centre = _world(anat, vox + rng.uniform(-0.5, 0.5, 3))
    d = float(np.exp(rng.uniform(np.log(diameter_mm[0]), np.log(diameter_mm[1]))))
    elong = float(rng.uniform(1.2, 2.2) if location == "periventricular" else rng.uniform(1.0, 1.5))
    r = d / 2.0
    semi = np.array([r * elong ** (2 / 3), r * elong ** (-1 / 3), r * elong ** (-1 / 3)])
    first = None
    if location == "periventricular":  # Dawson's fingers: long axis away from the ventricle wall
        g = _gradient_at(sites.vent_dist, vox, sp)
        first = g if np.linalg.norm(g) > 1e-6 else None
    axes = _random_rotation(rng, first)
    return LesionParams(
        lesion_id, np.round(centre, 3).tolist(), location, "ovoid", np.round(semi, 3).tolist(),
        np.round(axes, 6).tolist(), None, round(float(semi.max()), 3), {}, False, 0,
    )  # fmt: skip


def _make_active(
    rng: np.random.Generator,
    lesion: LesionParams,
    anat: SubjectAnatomy,
    sites: _Sites,
    pnames: list[str],
    pprobs: np.ndarray,
) -> None:
    lesion.active = True
    lesion.pattern = str(rng.choice(pnames, p=pprobs))
    if lesion.pattern == "nodular":
        lesion.enhance_inner, lesion.enhance_outer = 0.0, float(round(rng.uniform(0.6, 0.85), 3))
    else:
        outer = float(rng.uniform(0.75, 0.9))
        lesion.enhance_inner, lesion.enhance_outer = round(outer - float(rng.uniform(0.25, 0.4)), 3), round(outer, 3)
    lesion.enhance_gain = float(round(rng.uniform(0.6, 1.2), 3))
    if lesion.pattern == "open_ring":  # open towards the nearer of ventricle and cortex
        vox = tuple(np.clip(np.round(_vox(anat, np.asarray(lesion.centre_mm))).astype(int), 0,
                            np.asarray(anat.maps.shape) - 1))  # fmt: skip
        near = sites.vent_near if sites.vent_dist[vox] <= sites.gm_dist[vox] else sites.gm_near
        target = _world(anat, near[(slice(None), *vox)].astype(np.float64))
        lesion.opening_dir = np.round(_unit(target - np.asarray(lesion.centre_mm)), 6).tolist()


def _shape_fields(
    lesion: LesionParams, u: np.ndarray, lib: LesionLibrary | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """At local offsets ``u`` (N, 3) mm from the centre: inside (bool), rho (inside), mm beyond the border.

    A lesion of ``scale`` s is the drawn shape grown s times about its centre (``bounding_radius_mm`` is the
    grown one's).
    """
    if lesion.scale != 1.0:
        inside, rho, beyond = _shape_fields(replace(lesion, scale=1.0), u / lesion.scale, lib)
        return inside, rho, beyond * lesion.scale
    if lesion.shape == "ovoid":
        v = u @ np.asarray(lesion.axes)
        rho = np.sqrt(((v / np.asarray(lesion.semi_axes_mm)) ** 2).sum(axis=1))
        r = np.linalg.norm(v, axis=1)
        beyond = np.where(rho > 1, r * (1 - 1 / np.maximum(rho, 1e-9)), 0.0)
        return rho <= 1, rho, beyond
    assert lib is not None and lesion.library_index is not None
    mask = lib.masks[lesion.library_index]
    pad = int(np.ceil(lesion.bounding_radius_mm)) + 8
    padded = np.pad(mask, pad)
    depth = ndimage.distance_transform_edt(padded)
    out = ndimage.distance_transform_edt(~padded)
    rho_map = 1.0 - (depth - 0.5) / max(float(depth.max()) - 0.5, 1e-6)
    idx = np.round(u + np.asarray(ndimage.center_of_mass(mask)) + pad).astype(int)
    ok = np.all((idx >= 0) & (idx < np.asarray(padded.shape)), axis=1)
    idx = np.clip(idx, 0, np.asarray(padded.shape) - 1)
    inside = padded[tuple(idx.T)] & ok
    beyond = np.where(ok, np.maximum(out[tuple(idx.T)] - 0.5, 0.0), 99.0)
    return inside, np.where(inside, np.clip(rho_map[tuple(idx.T)], 0, 1), 2.0), beyond


def render_lesion(
    lesion: LesionParams,
    affine: np.ndarray,
    shape: tuple[int, int, int],
    *,
    halo_radius_mm: float,
    halo_width_mm: float,
    supersample: int,
) -> RenderedLesion:
    """Partial-volume fraction maps of one lesion on the grid (``affine``, ``shape``)."""
    lib = lesion_library() if lesion.shape == "real" else None
    spacing = np.asarray(spacing_from_affine(affine))
    centre_vox = np.linalg.inv(affine)[:3, :3] @ np.asarray(lesion.centre_mm) + np.linalg.inv(affine)[:3, 3]
    reach = (lesion.bounding_radius_mm + halo_radius_mm + 3 * halo_width_mm) / spacing + 1
    lo = np.maximum(np.floor(centre_vox - reach).astype(int), 0)
    hi = np.minimum(np.ceil(centre_vox + reach).astype(int) + 1, np.asarray(shape))
    slices = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
    box = tuple(int(h - lo_) for lo_, h in zip(lo, hi, strict=True))
    k = supersample
    sub = (np.arange(k) + 0.5) / k - 0.5
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in box], indexing="ij"), axis=-1).reshape(-1, 1, 3)
    offs = np.stack(np.meshgrid(sub, sub, sub, indexing="ij"), axis=-1).reshape(1, -1, 3)
    vox = (grid + offs + lo).reshape(-1, 3)
    u = vox @ affine[:3, :3].T + affine[:3, 3] - np.asarray(lesion.centre_mm)
    inside, rho, beyond = _shape_fields(lesion, u, lib)
    enh = np.zeros(len(u), dtype=bool)
    if lesion.active:
        enh = inside & (rho >= lesion.enhance_inner) & (rho <= lesion.enhance_outer)
        if lesion.opening_dir is not None:
            cosang = (u @ np.asarray(lesion.opening_dir)) / np.maximum(np.linalg.norm(u, axis=1), 1e-9)
            enh &= cosang < np.cos(np.deg2rad(50))
    halo = np.where(inside, 0.0, np.exp(-0.5 * ((beyond - halo_radius_mm) / halo_width_mm) ** 2))
    n = k**3

    def mean(values: np.ndarray) -> np.ndarray:
        return values.reshape(*box, n).mean(axis=-1).astype(np.float32)

    frac = mean(inside.astype(np.float32))
    rho_mean = np.where(frac > 0, mean(np.where(inside, rho, 0.0)) / np.maximum(frac, 1e-6), 1.0)
    return RenderedLesion(slices, frac, mean(enh.astype(np.float32)), mean(halo), rho_mean.astype(np.float32))
