"""Small phantom datasets for the plugin tests, made by the engine itself (no downloads),
in the engine's environment (dual.tests.engine_env)."""

import os

from dual.tests.engine_env import runEngine

# Small but with every ingredient: slab, vesicles, fiducials, all particle classes.
SMALL_SHAPE = (48, 96, 96)
SMALL_VOXEL_SIZE = 10.0


def makePhantoms(folder, seeds=(0,), shape=SMALL_SHAPE, voxelSize=SMALL_VOXEL_SIZE, extra=()):
    """Run `dual-engine phantom` once per seed into folder/TS_<seed>/.

    Returns {tsId: phantom folder}. Uses the engine as a user would, through its CLI.
    """
    folders = {}
    for seed in seeds:
        tsId = 'TS_%02d' % seed
        out = os.path.join(folder, tsId)
        if not os.path.exists(os.path.join(out, 'reconstruction.mrc')):
            runEngine(
                'phantom',
                out,
                '--seed',
                seed,
                '--shape',
                *shape,
                '--voxel-size',
                voxelSize,
                *extra,
            )
        folders[tsId] = out
    return folders
