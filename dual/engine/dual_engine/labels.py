"""Labels that follow a map into its synthetic tomograms (`simulate`).

A synthetic tomogram lies on its map's grid (same shape, voxel size and origin), so
the map's labels hold for it unchanged: class and occupancy masks are copied with the
tomogram's voxel size in their headers, the particle list (voxels of that grid) and the
class table as they are. A map has labels when it is a SHREC-2021 model folder's
grandmodel.mrc (what `phantom` writes) with label files beside it; they are checked
against the map before any simulation, so a mask of another grid never follows.
"""

import os
import shutil

from dual_engine.contract import (
    LABEL_FILES,
    LABELLED_MAP_NAME,
    InputError,
    simulated_label_name,
)
from dual_engine.io import atomic_output, read_mrc, read_particle_locations, write_mrc


def map_labels(map_path):
    """{label file name: path} of the labels beside a map ({} when it has none)."""
    if os.path.basename(map_path) != LABELLED_MAP_NAME:
        return {}
    folder = os.path.dirname(os.path.abspath(map_path))
    found = {name: os.path.join(folder, name) for name in LABEL_FILES}
    return {name: path for name, path in found.items() if os.path.isfile(path)}


def _mrc_shape(path):
    return tuple(read_mrc(path)[0].shape)


def check_labels(map_path, labels):
    """Refuse labels that do not lie on the map's grid: masks of another shape, a
    particle list that does not parse or has positions outside the grid."""
    shape = _mrc_shape(map_path)
    for name, path in labels.items():
        if name.endswith('.mrc'):
            own = _mrc_shape(path)
            if own != shape:
                raise InputError(
                    "%s is %s voxels but its map %s is %s: labels must lie on the map's grid"
                    % (path, _shape_text(own), map_path, _shape_text(shape))
                )
        elif name == 'particle_locations.txt':
            for index, particle in enumerate(read_particle_locations(path), 1):
                xyz = (particle.x, particle.y, particle.z)
                if any(not -0.5 <= v < n - 0.5 for v, n in zip(xyz, shape[::-1])):
                    raise InputError(
                        '%s, particle %d at x y z %g %g %g voxels lies outside its map '
                        '%s (%s voxels)' % ((path, index) + xyz + (map_path, _shape_text(shape)))
                    )


def _shape_text(shape):
    """'X x Y x Z' of a (z, y, x) shape."""
    return ' x '.join(str(n) for n in shape[::-1])


def label_outputs(labels, simulated_paths):
    """[(source, output path)] of every label file for every synthetic tomogram."""
    return [
        (source, os.path.join(os.path.dirname(sim), simulated_label_name(sim, name)))
        for sim in simulated_paths
        for name, source in sorted(labels.items())
    ]


def write_labels(labels, simulated_path, voxel_size):
    """Write the map's labels beside one synthetic tomogram; returns {name: path}."""
    written = {}
    for source, output in label_outputs(labels, [simulated_path]):
        name = os.path.basename(source)
        if name.endswith('.mrc'):
            data, _ = read_mrc(source, mmap=False)
            write_mrc(output, data, voxel_size)
        else:
            with atomic_output(output) as tmp:
                shutil.copyfile(source, tmp)
        written[name] = output
    return written
