"""Picked coordinates for users outside Scipion: RELION STAR and Dynamo table files.

Engine coordinates are (x, y, z) in voxels of the picked tomogram, 0-based, the
centre of voxel [z, y, x] = array index being the integer position (see io).

RELION (tomography, STAR 3.1 syntax, one block `data_particles`):
- rlnTomoName: the tomogram's name; it must match the tomogram / tilt-series name
  of the RELION project (rlnTomoName in its tomograms.star).
- rlnCoordinateX/Y/Z: position in pixels, 0-based, origin at the centre of the first
  voxel: exactly the engine's coordinates when the pixel size is the picked
  tomogram's voxel size (the default). RELION itself indexes arrays from 0, and
  Scipion's reliontomo plugin writes its bottom-left-corner pixel coordinates here
  without any offset. RELION 4 reads these columns as *unbinned tilt-series* pixels
  (its particle positions, ParticleSet::getPosition; TomoBEAR's dyn2rel rescales by
  the binning before writing): pass coordinate_pixel_size = the tilt series' pixel
  size to write them that way. The pixel size used is recorded in a comment line.
- rlnCenteredCoordinateX/Y/ZAngst (only when the tomogram `shape` is given): the
  RELION 5 position, in Angstrom from the tomogram centre, (x - n_x / 2) * voxel_size
  with n_x the tomogram's size along x (RELION 5 puts the centre at size / 2). It does
  not depend on binning. RELION 5 uses these columns when present, RELION 4 ignores
  them.
- rlnAutopickFigureOfMerit: the DoG score of the pick.
Rows are written in the given order (picks come best first).

Dynamo table (.tbl, plain text, one particle per row, 35 columns; convention of the
Dynamo wiki "Table convention", `dthelp`; the names below are 1-based column numbers):
   1 tag (1..N)          2 aligned = 1          3 averaged = 1
   4-6 dx dy dz shifts = 0 (pixels)             7-9 tdrot tilt narot = 0 (ZXZ, degrees)
  10 cc = DoG score     11 cc2 = 0              12 cpu = 0
  13 ftype: 0 (full range) or 1 (single-axis tilt around y) when tilt_range is given
  14-15 ymintilt ymaxtilt = tilt_range or 0     16-19 xmintilt xmaxtilt fs1 fs2 = 0
  20 tomo = tomo_index   21 reg = 0              22 class = 1        23 annotation = 0
  24-26 x y z: position in pixels of the picked tomogram
  27-35 dshift daxis dnarot dcc otag npar (33 unused) ref sref = 0
Index base: Dynamo counts voxels from 1 (wiki "Volume center": the corner voxel is
V[1,1,1]; a particle at table position r has its central voxel at V[r]), so the
writer stores x + 1 by default (one_based=True) and the reader subtracts 1. Scipion's
dynamo plugin writes its 0-based bottom-left-corner coordinates without the +1; pass
one_based=False to match such files. The reader returns positions 24-26 plus the shifts
4-6 (Dynamo's refined particle position), which are zero in files written here.
"""

import math
import shlex

import numpy as np

from dual_engine import __version__
from dual_engine.contract import InputError, check_tomo_name
from dual_engine.io import atomic_output

STAR_BLOCK = "particles"
DYNAMO_COLUMNS = 35


def _picks(xyz, scores):
    xyz = np.asarray(xyz, dtype=np.float64)
    xyz = xyz.reshape(-1, 3) if xyz.size == 0 or xyz.ndim == 1 else xyz
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise InputError(
            "coordinates must be an N x 3 array of (x, y, z), got shape %s" % (xyz.shape,)
        )
    if len(scores) != len(xyz):
        raise InputError("%d coordinates but %d scores" % (len(xyz), len(scores)))
    if not (np.all(np.isfinite(xyz)) and np.all(np.isfinite(scores))):
        raise InputError("coordinates and scores must be finite numbers")
    return xyz, scores


def _positive(value, name):
    if value is None or not (math.isfinite(float(value)) and float(value) > 0):
        raise InputError("%s must be > 0 A, not %s" % (name, value))
    return float(value)


# --------------------------------------------------------------------------- RELION


def write_relion_star(
    path, xyz, scores, tomo_name, voxel_size, shape=None, coordinate_pixel_size=None
):
    """RELION tomography particle coordinates (see the module doc for every column).

    xyz: (x, y, z) voxels of the picked tomogram (0-based); voxel_size: its voxel size
    in A; shape: its (Z, Y, X) size, to add the RELION 5 centred coordinates;
    coordinate_pixel_size: pixel size (A) in which rlnCoordinateX/Y/Z are written
    (default voxel_size; the unbinned tilt-series pixel size for a RELION 4 import).
    """
    xyz, scores = _picks(xyz, scores)
    voxel_size = _positive(voxel_size, "the voxel size")
    pixel = (
        voxel_size
        if coordinate_pixel_size is None
        else _positive(coordinate_pixel_size, "the coordinate pixel size")
    )
    tomo_name = check_tomo_name(tomo_name)
    coords = xyz * (voxel_size / pixel)
    labels = ["rlnTomoName", "rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]
    columns = [coords[:, 0], coords[:, 1], coords[:, 2]]
    if shape is not None:
        if len(shape) != 3:
            raise InputError("shape must be the tomogram's (Z, Y, X) size, not %s" % (shape,))
        centre_xyz = np.array(shape[::-1], dtype=np.float64) / 2.0
        centred = (xyz - centre_xyz) * voxel_size
        labels += [
            "rlnCenteredCoordinateXAngst",
            "rlnCenteredCoordinateYAngst",
            "rlnCenteredCoordinateZAngst",
        ]
        columns += [centred[:, 0], centred[:, 1], centred[:, 2]]
    labels.append("rlnAutopickFigureOfMerit")

    with atomic_output(path) as tmp, open(tmp, "w") as f:
        f.write("\n# version 30001\n")
        f.write(
            "# dual-engine %s DoG picks. rlnCoordinateX/Y/Z: pixels of %.6g A, 0-based "
            "(voxel_size of the picked tomogram: %.6g A)%s\n"
            % (
                __version__,
                pixel,
                voxel_size,
                "; rlnCentered*Angst: A from the centre of a %s (X Y Z) voxel tomogram"
                % " x ".join(str(int(n)) for n in shape[::-1])
                if shape is not None
                else "",
            )
        )
        f.write("\ndata_%s\n\nloop_\n" % STAR_BLOCK)
        for i, label in enumerate(labels, 1):
            f.write("_%s #%d\n" % (label, i))
        for row in range(len(xyz)):
            values = ["%.4f" % c[row] for c in columns]
            f.write("%s\t%s\t%.8g\n" % (tomo_name, "\t".join(values), scores[row]))
        f.write("\n")


def read_star_loops(path):
    """{block name: {"labels": [...], "rows": [[str, ...], ...]}} of the loops in a STAR file.

    A small reader for the STAR files written here and RELION's usual layout: data_
    blocks, loop_ tables with `_label [#n]` lines, whitespace separated values (quotes
    allowed), '#' comments. Key-value (non-loop) items are ignored.
    """
    blocks, current, state = {}, None, None
    with open(path) as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("data_"):
                current = {"labels": [], "rows": []}
                blocks[line[5:]] = current
                state = "block"
            elif line.startswith("loop_"):
                if current is None:
                    raise InputError("%s:%d: loop_ outside a data_ block" % (path, lineno))
                current["labels"], current["rows"], state = [], [], "labels"
            elif line.startswith("_"):
                if state == "labels":
                    current["labels"].append(line.split()[0][1:])
                # else: a key-value item, ignored
            elif state in ("labels", "rows"):
                state = "rows"
                try:
                    values = shlex.split(line, comments=True)
                except ValueError as err:
                    raise InputError("%s:%d: %s" % (path, lineno, err)) from err
                if len(values) != len(current["labels"]):
                    raise InputError(
                        "%s:%d: %d values for %d columns"
                        % (path, lineno, len(values), len(current["labels"]))
                    )
                current["rows"].append(values)
    return blocks


def read_relion_star(path, voxel_size=None, coordinate_pixel_size=None, shape=None):
    """(xyz [N, 3] voxels, scores [N], tomo names [N]) from a RELION coordinate STAR file.

    Reads block data_particles (else the first loop with coordinates). Positions come
    from rlnCoordinateX/Y/Z, converted from pixels of coordinate_pixel_size to voxels of
    voxel_size when both are given; a file with only RELION 5 centred coordinates needs
    voxel_size and the tomogram shape (Z, Y, X). Scores: rlnAutopickFigureOfMerit, else 1.
    """
    try:
        blocks = read_star_loops(path)
    except OSError as err:
        raise InputError("cannot read STAR file %s: %s" % (path, err)) from err
    centred_labels = ["rlnCenteredCoordinate%sAngst" % a for a in "XYZ"]
    pixel_labels = ["rlnCoordinate%s" % a for a in "XYZ"]

    def has_coordinates(block):
        return set(pixel_labels) <= set(block["labels"]) or set(centred_labels) <= set(
            block["labels"]
        )

    candidates = [blocks[STAR_BLOCK]] if STAR_BLOCK in blocks else []
    candidates += [b for b in blocks.values() if b not in candidates]
    table = next((b for b in candidates if has_coordinates(b)), None)
    if table is None:
        raise InputError(
            "%s has no loop with rlnCoordinateX/Y/Z or rlnCenteredCoordinateX/Y/ZAngst" % path
        )
    labels, rows = table["labels"], table["rows"]

    def column(label, kind=float):
        i = labels.index(label)
        try:
            return np.array([kind(r[i]) for r in rows])
        except ValueError as err:
            raise InputError("%s: bad %s value: %s" % (path, label, err)) from err

    if set(pixel_labels) <= set(labels):
        xyz = np.stack([column(c) for c in pixel_labels], axis=1) if rows else np.zeros((0, 3))
        if voxel_size is not None and coordinate_pixel_size is not None:
            xyz = xyz * (
                _positive(coordinate_pixel_size, "the coordinate pixel size")
                / _positive(voxel_size, "the voxel size")
            )
    else:
        if voxel_size is None or shape is None:
            raise InputError(
                "%s has only RELION 5 centred coordinates: the voxel size "
                "and the tomogram shape are needed to convert them" % path
            )
        centred = (
            np.stack([column(c) for c in centred_labels], axis=1) if rows else np.zeros((0, 3))
        )
        xyz = (
            centred / _positive(voxel_size, "the voxel size")
            + np.array(shape[::-1], dtype=np.float64) / 2.0
        )
    scores = (
        column("rlnAutopickFigureOfMerit")
        if "rlnAutopickFigureOfMerit" in labels
        else np.ones(len(rows))
    )
    names = list(column("rlnTomoName", str)) if "rlnTomoName" in labels else [None] * len(rows)
    return xyz.reshape(-1, 3), scores, names


# --------------------------------------------------------------------------- Dynamo


def write_dynamo_tbl(path, xyz, scores, tomo_index=1, tilt_range=None, one_based=True):
    """Dynamo table of the picks (35 columns, see the module doc).

    xyz: (x, y, z) voxels of the picked tomogram, 0-based; written + 1 when one_based
    (Dynamo's own convention). tomo_index: column 20, the tomogram's number in the
    Dynamo catalogue / volume list. tilt_range (min, max) degrees sets ftype 1 and
    columns 14-15; without it the missing wedge is left unset (ftype 0).
    """
    xyz, scores = _picks(xyz, scores)
    if int(tomo_index) != tomo_index or tomo_index < 1:
        raise InputError(
            "the Dynamo tomogram number must be a positive integer, not %s" % tomo_index
        )
    ftype, ymin, ymax = 0, 0.0, 0.0
    if tilt_range is not None:
        ymin, ymax = (float(t) for t in tilt_range)
        if not (-90 <= ymin < ymax <= 90):
            raise InputError(
                "tilt range must be min < max within [-90, 90], not %s" % (tilt_range,)
            )
        ftype = 1
    position = xyz + (1.0 if one_based else 0.0)
    with atomic_output(path) as tmp, open(tmp, "w") as f:
        for i, ((x, y, z), score) in enumerate(zip(position, scores)):
            row = [
                "%d" % (i + 1),
                "1",
                "1",
                "0",
                "0",
                "0",
                "0",
                "0",
                "0",
                "%.8g" % score,
                "0",
                "0",
                "%d" % ftype,
                "%.6g" % ymin,
                "%.6g" % ymax,
                "0",
                "0",
                "0",
                "0",
                "%d" % tomo_index,
                "0",
                "1",
                "0",
                "%.4f" % x,
                "%.4f" % y,
                "%.4f" % z,
            ]
            row += ["0"] * (DYNAMO_COLUMNS - len(row))
            f.write(" ".join(row) + "\n")


def read_dynamo_tbl(path, one_based=True):
    """(xyz [N, 3] 0-based voxels, cc scores [N], tomogram numbers [N]) of a Dynamo table.

    Positions are columns 24-26 plus the shifts 4-6, minus 1 when one_based.
    """
    try:
        with open(path) as f:
            rows = [line.split() for line in f if line.strip()]
        table = np.array(rows, dtype=np.float64)
    except (OSError, ValueError) as err:
        raise InputError("cannot read Dynamo table %s: %s" % (path, err)) from err
    if len(rows) == 0:
        return np.zeros((0, 3)), np.zeros(0), np.zeros(0, dtype=np.int64)
    if table.ndim != 2:
        raise InputError(
            "%s: rows of a Dynamo table must all have the same number of columns" % path
        )
    if table.shape[1] < 26:
        raise InputError(
            "%s has %d columns; a Dynamo table has at least 26 (x y z are "
            "columns 24-26)" % (path, table.shape[1])
        )
    xyz = table[:, 23:26] + table[:, 3:6] - (1.0 if one_based else 0.0)
    return xyz, table[:, 9].copy(), table[:, 19].astype(np.int64)
