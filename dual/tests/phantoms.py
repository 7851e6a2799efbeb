"""Small phantom datasets for the plugin tests, made by the engine itself (no downloads)."""

import os
import subprocess
import sys

# Small but with every ingredient: slab, vesicles, fiducials, all particle classes.
SMALL_SHAPE = (48, 96, 96)
SMALL_VOXEL_SIZE = 10.0


def makePhantoms(folder, seeds=(0,), shape=SMALL_SHAPE, voxelSize=SMALL_VOXEL_SIZE, extra=()):
    """Run `python -m dual_engine phantom` once per seed into folder/TS_<seed>/.

    Returns {tsId: phantom folder}. Uses the engine as a user would, through its CLI.
    """
    folders = {}
    for seed in seeds:
        tsId = 'TS_%02d' % seed
        out = os.path.join(folder, tsId)
        if not os.path.exists(os.path.join(out, 'reconstruction.mrc')):
            subprocess.run(
                [
                    sys.executable,
                    '-m',
                    'dual_engine',
                    'phantom',
                    out,
                    '--seed',
                    str(seed),
                    '--shape',
                    *map(str, shape),
                    '--voxel-size',
                    str(voxelSize),
                    *extra,
                ],
                check=True,
            )
        folders[tsId] = out
    return folders
