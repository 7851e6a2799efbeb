"""The grand model: a crowded slab of cytoplasm with its ground-truth masks.

A volume (Z, Y, X) holds a slab of specimen that fills most of z. Inside the slab:
a weak uniform background, vesicles (spherical bilayer shells), gold fiducials near the
slab surfaces and randomly oriented macromolecules of several classes, none overlapping.

Rotation convention (particle_locations.txt columns rot_Z1 rot_X rot_Z2, degrees):
ZXZ Euler angles of the active rotation R = Rz(rot_Z1) @ Rx(rot_X) @ Rz(rot_Z2) that
takes a template's (x, y, z) coordinates, relative to its centre, to the volume:
p_volume = centre + R @ p_template, with Rz(a) = [[cos a, -sin a, 0], [sin a, cos a, 0],
[0, 0, 1]] and Rx(b) = [[1, 0, 0], [0, cos b, -sin b], [0, sin b, cos b]].
Orientations are uniform on SO(3) (rot_Z1, rot_Z2 uniform, cos(rot_X) uniform).
"""

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from dual_engine.io import InputError, Particle
from dual_engine.contract import PHANTOM_CONTEXT_CLASSES


@dataclass(frozen=True)
class MacromoleculeClass:
    """A macromolecule shape: a union of soft-edged balls (x, y, z, radius) in nm."""

    name: str
    description: str
    balls: tuple


def _ring(n, ring_radius, z, ball_radius, phase=0.0):
    angles = phase + 2 * np.pi * np.arange(n) / n
    return tuple((ring_radius * np.cos(a), ring_radius * np.sin(a), z, ball_radius) for a in angles)


# Sizes are the largest extent. Every class has density at its centre, so that the
# listed centre lies inside the particle's own occupancy label.
CATALOGUE = (
    MacromoleculeClass(
        "ribosome",
        "two-lobed asymmetric particle, ~28 nm",
        (
            (0.0, 0.0, -3.5, 10.0),  # large subunit
            (3.0, 0.0, 7.5, 6.0),
            (-3.5, 1.0, 8.0, 5.5),  # small subunit
            (9.5, 0.0, -6.0, 3.0),
            (-8.0, -5.0, -2.0, 3.5),
        ),
    ),  # stalks break the symmetry
    MacromoleculeClass(
        "barrel",
        "cylinder of four stacked heptameric rings, ~20 nm x 13 nm",
        sum(
            (
                _ring(7, 4.0, z, 2.4, phase=(i % 2) * np.pi / 7)
                for i, z in enumerate((-7.5, -2.5, 2.5, 7.5))
            ),
            (),
        )
        + ((0.0, 0.0, 0.0, 2.0),),
    ),
    MacromoleculeClass(
        "ring",
        "flat hexameric ring with a hub and a cap, ~18 nm x 6 nm",
        _ring(6, 6.0, 0.0, 2.8) + ((0.0, 0.0, 0.0, 2.5), (0.0, 0.0, 2.2, 1.8)),
    ),
    MacromoleculeClass(
        "tetramer",
        "four globules on a tetrahedron, ~14 nm",
        tuple(
            (3.6 * x / np.sqrt(3), 3.6 * y / np.sqrt(3), 3.6 * z / np.sqrt(3), 3.4)
            for x, y, z in ((1, 1, 1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1))
        )
        + ((0.0, 0.0, 0.0, 2.0),),
    ),
    MacromoleculeClass(
        "dimer", "two unequal globules, ~10 nm", ((-2.3, 0.0, 0.0, 2.8), (2.6, 0.0, 0.0, 2.4))
    ),
)
MACROMOLECULES = tuple(c.name for c in CATALOGUE)
# Fixed ids, whatever subset is packed, so that masks of different runs are comparable.
CLASS_IDS = {name: i + 1 for i, name in enumerate(MACROMOLECULES + PHANTOM_CONTEXT_CLASSES)}

PROTEIN_DENSITY = 1.0
MEMBRANE_DENSITY = 1.0
LABEL_THRESHOLD = 0.5  # fraction of the object's density that defines its mask (half max)


def euler_zxz_matrix(rot_z1, rot_x, rot_z2):
    """3x3 matrix acting on (x, y, z) column vectors; angles in degrees (see module doc)."""

    def rz(a):
        c, s = np.cos(a), np.sin(a)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    def rx(b):
        c, s = np.cos(b), np.sin(b)
        return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])

    a, b, g = np.radians([rot_z1, rot_x, rot_z2])
    return rz(a) @ rx(b) @ rz(g)


def random_euler(rng):
    """Uniformly distributed orientation as ZXZ angles in degrees."""
    rot_z1, rot_z2 = rng.uniform(0.0, 360.0, size=2)
    rot_x = np.degrees(np.arccos(rng.uniform(-1.0, 1.0)))
    return float(rot_z1), float(rot_x), float(rot_z2)


def _soft_ball(distance, radius, width):
    """1 inside, 0 outside, a tanh edge `width` wide (anti-aliasing)."""
    return 0.5 * (1.0 - np.tanh((distance - radius) / width))


def render_template(cls, voxel_size):
    """Density of `cls` in a cubic box of odd side, centred on the box's centre voxel.

    The box is large enough that any rotation about its centre stays inside it.
    """
    nm = voxel_size / 10.0  # nm per voxel
    balls = np.array(cls.balls, dtype=np.float64)
    reach = np.max(np.linalg.norm(balls[:, :3], axis=1) + balls[:, 3]) / nm
    half = int(np.ceil(reach)) + 2
    axis = (np.arange(2 * half + 1) - half) * nm
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    width = 0.5 * nm  # half a voxel
    density = np.zeros(z.shape, dtype=np.float64)
    for bx, by, bz, radius in balls:
        distance = np.sqrt((x - bx) ** 2 + (y - by) ** 2 + (z - bz) ** 2)
        np.maximum(density, _soft_ball(distance, radius, width), out=density)
    density *= PROTEIN_DENSITY
    if density[half, half, half] < LABEL_THRESHOLD * PROTEIN_DENSITY:
        raise InputError("voxel size %.3g A is too coarse for class '%s'" % (voxel_size, cls.name))
    return density.astype(np.float32)


def rotate_box(box, matrix, order=1):
    """Rotate a cubic box about its centre voxel by `matrix` (acting on x, y, z)."""
    flip = np.eye(3)[::-1]  # (x, y, z) <-> (z, y, x)
    # affine_transform pulls: out[o] = in[M o + offset]; pulling with R^T pushes with R.
    pull = flip @ matrix.T @ flip
    centre = (np.array(box.shape) - 1) / 2.0
    return ndimage.affine_transform(
        box, pull, offset=centre - pull @ centre, order=order, mode="constant", cval=0.0
    )


def _radial_box(radius_vox):
    half = int(np.ceil(radius_vox)) + 2
    axis = np.arange(2 * half + 1) - half
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    return np.sqrt(x**2 + y**2 + z**2)


def render_vesicle(radius_vox, voxel_size):
    """(density, membrane mask, ball mask) of a bilayer shell; radius at the bilayer's middle.

    Two Gaussian leaflets 3.2 nm apart (sigma 0.8 nm) make a ~5 nm thick membrane.
    """
    nm = voxel_size / 10.0
    leaflet_offset, sigma = 1.6 / nm, max(0.8 / nm, 0.5)
    half_thickness = max(2.5 / nm, 1.0)
    r = _radial_box(radius_vox + half_thickness + 1)
    density = sum(
        np.exp(-((r - radius_vox - d) ** 2) / (2 * sigma**2))
        for d in (-leaflet_offset, leaflet_offset)
    )
    density = MEMBRANE_DENSITY * density / density.max()
    membrane = np.abs(r - radius_vox) <= half_thickness
    ball = r <= radius_vox + half_thickness
    return density.astype(np.float32), membrane, ball


def render_fiducial(radius_vox, gold_density):
    r = _radial_box(radius_vox)
    density = gold_density * _soft_ball(r, radius_vox, 0.5)
    mask = density >= LABEL_THRESHOLD * gold_density
    return density.astype(np.float32), mask, mask


def _clip_box(corner, box_shape, vol_shape):
    """Slices of the volume and of a box whose first voxel sits at `corner` (may stick out)."""
    vol, box = [], []
    for start, b, n in zip(corner, box_shape, vol_shape):
        lo, hi = max(0, start), min(n, start + b)
        vol.append(slice(lo, hi))
        box.append(slice(lo - start, hi - start))
    return tuple(vol), tuple(box)


def _centre_ranges(mask, lows, highs):
    """Per axis, the inclusive range of centres keeping `mask` within [lows, highs]."""
    half = (np.array(mask.shape) - 1) // 2
    ranges = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        filled = np.flatnonzero(mask.any(axis=other))
        ranges.append(
            (lows[axis] - (filled[0] - half[axis]), highs[axis] - (filled[-1] - half[axis]))
        )
    return ranges


@dataclass
class GrandModel:
    """Ground truth of a phantom; `particles[i]` owns label i + 1 in `occupancy`."""

    density: np.ndarray  # float32 (Z, Y, X)
    class_mask: np.ndarray  # int16, CLASS_IDS, 0 = background
    occupancy: np.ndarray  # int16, instance labels
    particles: list
    slab: tuple  # (first, last) z index of the specimen slab
    requested: dict = field(default_factory=dict)  # objects tried per class

    def counts(self):
        counts = {}
        for p in self.particles:
            counts[p.name] = counts.get(p.name, 0) + 1
        return counts


class _Packer:
    """Places objects one by one on a shared occupancy grid (rasterised overlap test)."""

    def __init__(self, shape, rng, max_tries):
        self.shape = shape
        self.rng = rng
        self.max_tries = max_tries
        self.objects = np.zeros(shape, dtype=np.float32)
        self.class_mask = np.zeros(shape, dtype=np.int16)
        self.occupancy = np.zeros(shape, dtype=np.int16)
        self.particles = []

    def place(self, name, density, class_region, label_region, z_range, angles=(0.0, 0.0, 0.0)):
        """Try random centres; on success write the object and return True.

        `label_region` must not touch any other object's label, with one voxel of gap;
        it stays within z_range (inclusive) and the volume.
        """
        lows = (z_range[0], 0, 0)
        highs = (z_range[1], self.shape[1] - 1, self.shape[2] - 1)
        ranges = _centre_ranges(label_region, lows, highs)
        if any(lo > hi for lo, hi in ranges):
            return False
        guard = ndimage.binary_dilation(label_region, iterations=1)
        half = (np.array(label_region.shape) - 1) // 2
        for _ in range(self.max_tries):
            centre = np.array([self.rng.integers(lo, hi + 1) for lo, hi in ranges])
            vol, box = _clip_box(centre - half, label_region.shape, self.shape)
            if self.occupancy[vol][guard[box]].any():
                continue
            label = len(self.particles) + 1
            if label > np.iinfo(np.int16).max:
                raise InputError(
                    "more than %d objects: too many for an int16 occupancy mask"
                    % np.iinfo(np.int16).max
                )
            self.objects[vol] += density[box]
            self.occupancy[vol][label_region[box]] = label
            self.class_mask[vol][class_region[box]] = CLASS_IDS[name]
            z, y, x = (int(c) for c in centre)
            self.particles.append(Particle(name, x, y, z, *angles))
            return True
        return False


def slab_extent(nz, slab_fraction):
    thickness = int(round(nz * slab_fraction))
    first = (nz - thickness) // 2
    return first, first + thickness - 1


def default_object_counts(shape, voxel_size):
    """(vesicles, fiducials) for a volume: about one of each per (120 nm)^2 of area."""
    area_nm2 = shape[1] * shape[2] * (voxel_size / 10.0) ** 2
    per_area = area_nm2 / 120.0**2
    return max(1, int(round(per_area))), max(2, int(round(per_area)))


def pack(
    shape,
    voxel_size,
    rng,
    classes=None,
    n_particles=None,
    n_vesicles=None,
    n_fiducials=None,
    slab_fraction=0.85,
    background=0.1,
    gold_density=8.0,
    crowding=0.2,
    max_tries=300,
):
    """Build a GrandModel.

    classes: macromolecule class names (default all of MACROMOLECULES).
    n_particles: macromolecules to try to place, split evenly over the classes and placed
        largest class first; default fills `crowding` (fraction) of the slab volume.
    n_vesicles, n_fiducials: default from `default_object_counts`.
    Objects that find no free spot after `max_tries` random centres are dropped; the
    GrandModel records how many of each class were tried.
    """
    shape = tuple(int(s) for s in shape)
    classes = list(MACROMOLECULES if classes is None else classes)
    unknown = [c for c in classes if c not in MACROMOLECULES]
    if unknown:
        raise InputError(
            "unknown class %s; valid classes: %s"
            % (", ".join(repr(c) for c in unknown), ", ".join(MACROMOLECULES))
        )
    classes = list(dict.fromkeys(classes))  # drop repeats, keep order
    for name, value in (
        ("n_particles", n_particles),
        ("n_vesicles", n_vesicles),
        ("n_fiducials", n_fiducials),
    ):
        if value is not None and value < 0:
            raise InputError("%s must be >= 0 (got %s)" % (name, value))
    if not 0 < slab_fraction <= 1:
        raise InputError("slab_fraction must be in (0, 1] (got %s)" % slab_fraction)
    nm = voxel_size / 10.0
    z_first, z_last = slab_extent(shape[0], slab_fraction)
    slab_thickness = z_last - z_first + 1

    templates = {c.name: render_template(c, voxel_size) for c in CATALOGUE if c.name in classes}
    for name, template in templates.items():
        size = template.shape[0] - 4  # box side minus the rendering margin
        if size > slab_thickness or size > min(shape[1:]):
            raise InputError(
                "shape %s is too small for class '%s' (%d voxels across at %.3g A/voxel; the "
                "slab is %d voxels thick): use a larger shape or leave the class out"
                % ("x".join(map(str, shape)), name, size, voxel_size, slab_thickness)
            )

    default_vesicles, default_fiducials = default_object_counts(shape, voxel_size)
    n_vesicles = default_vesicles if n_vesicles is None else int(n_vesicles)
    n_fiducials = default_fiducials if n_fiducials is None else int(n_fiducials)
    volumes = {
        name: int((t >= LABEL_THRESHOLD * PROTEIN_DENSITY).sum()) for name, t in templates.items()
    }
    if n_particles is None:
        slab_voxels = slab_thickness * shape[1] * shape[2]
        mean_volume = np.mean(list(volumes.values())) if volumes else 1.0
        n_particles = int(round(crowding * slab_voxels / mean_volume)) if volumes else 0
    if n_particles and not classes:
        raise InputError(
            "no macromolecule class selected; valid classes: %s" % ", ".join(MACROMOLECULES)
        )

    packer = _Packer(shape, rng, max_tries)
    requested = {}

    # Vesicles first (largest), radius 20-50 nm but thin enough for the slab.
    half_thickness = max(2.5 / nm, 1.0)
    r_max = min(50.0 / nm, slab_thickness / 2.0 - half_thickness - 1, min(shape[1:]) / 2.0 - 3)
    r_min = min(20.0 / nm, 0.85 * r_max)
    if r_max >= 3:
        for _ in range(n_vesicles):
            radius = rng.uniform(r_min, r_max)
            density, membrane, ball = render_vesicle(radius, voxel_size)
            packer.place("vesicle", density, membrane, ball, (z_first, z_last))
            requested["vesicle"] = requested.get("vesicle", 0) + 1

    # Gold beads (5-10 nm diameter) sit near the top or bottom surface of the slab.
    for _ in range(n_fiducials):
        radius = max(rng.uniform(2.5, 5.0) / nm, 1.0)
        density, mask, _ = render_fiducial(radius, gold_density)
        depth = int(np.ceil(radius)) + 3
        if rng.uniform() < 0.5:
            z_range = (z_first, min(z_last, z_first + 2 * depth))
        else:
            z_range = (max(z_first, z_last - 2 * depth), z_last)
        packer.place("fiducial", density, mask, mask, z_range)
        requested["fiducial"] = requested.get("fiducial", 0) + 1

    # Macromolecules: equal shares, largest class first so that big ones still find room.
    order = sorted(classes, key=lambda name: -volumes[name])
    shares = (
        {
            name: n_particles // len(classes) + (i < n_particles % len(classes))
            for i, name in enumerate(classes)
        }
        if classes
        else {}
    )
    for name in order:
        requested[name] = shares[name]
        for _ in range(shares[name]):
            angles = random_euler(rng)
            density = rotate_box(templates[name], euler_zxz_matrix(*angles))
            region = density >= LABEL_THRESHOLD * PROTEIN_DENSITY
            region = ndimage.binary_fill_holes(region)
            packer.place(name, density, region, region, (z_first, z_last), angles)

    slab = np.zeros(shape[0], dtype=np.float32)
    slab[z_first : z_last + 1] = background
    density = np.maximum(packer.objects, slab[:, None, None])
    # Soft edges of objects touching the slab surfaces are cut: nothing outside the slab.
    density[:z_first] = 0
    density[z_last + 1 :] = 0
    return GrandModel(
        density, packer.class_mask, packer.occupancy, packer.particles, (z_first, z_last), requested
    )
