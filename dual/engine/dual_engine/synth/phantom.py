"""`dual-engine phantom`: a SHREC-2021-like tomogram with its complete ground truth.

Files written to `outdir` (every MRC carries the voxel size in its header):
  reconstruction.mrc            WBP tomogram, float32, dense = bright (see acquisition)
  reconstruction_noisefree.mrc  same optics, CTF and wedge without noise (write_noise_free)
  reconstruction_even.mrc,      even/odd half tomograms: each tilt's counts split in two
  reconstruction_odd.mrc        at random, as frames are (write_halves)
  grandmodel.mrc                noise-free density, float32
  class_mask.mrc                int16 class id per voxel (class_conversion_table.txt)
  occupancy_mask.mrc            int16 instance id = 1-based line in particle_locations.txt
  particle_locations.txt        `class x y z rot_Z1 rot_X rot_Z2` (voxels, ZXZ degrees)
  class_conversion_table.txt    `name id`, background 0
  tilt_angles.txt               one angle (degrees) per line
  phantom.json                  parameters, seed, version, counts, Pearson, SNR, seconds
                                (Pearson and SNR are null where undefined); written
                                last, so its presence marks a complete phantom.
"""

import json
import os
import time

import numpy as np

from dual_engine import __version__
from dual_engine.io import InputError, atomic_output, write_mrc, write_particle_locations
from dual_engine.metrics import pearson
from dual_engine.synth.acquisition import AcquisitionParams, acquire
from dual_engine.synth.packing import CLASS_IDS, pack

MIN_SHAPE = (16, 32, 32)


def _correlation(volume, density):
    """Pearson r of a tomogram with the grand model (metrics.pearson), or None where it
    is undefined because one of them is constant."""
    if np.ptp(volume) == 0 or np.ptp(density) == 0:
        return None
    return pearson(volume, density)


def _rounded(value):
    return None if value is None else round(value, 4)


def _validate(shape, voxel_size, seed):
    if len(shape) != 3:
        raise InputError("shape must be three sizes Z Y X (got %s)" % (shape,))
    if any(int(s) != s or s < m for s, m in zip(shape, MIN_SHAPE)):
        raise InputError(
            "shape %s is too small: at least %s voxels (Z Y X)"
            % ("x".join(map(str, shape)), "x".join(map(str, MIN_SHAPE)))
        )
    if not voxel_size > 0:
        raise InputError("voxel size must be > 0 A (got %g)" % voxel_size)
    if int(seed) != seed or seed < 0:
        raise InputError("seed must be a non-negative integer (got %s)" % seed)


def make_phantom(
    outdir,
    shape=(64, 256, 256),
    voxel_size=10.0,
    seed=0,
    tilt_range=(-60.0, 60.0),
    tilt_step=3.0,
    defocus_um=3.0,
    dose=100.0,
    voltage_kv=300.0,
    cs_mm=2.7,
    amplitude_contrast=0.07,
    classes=None,
    n_particles=None,
    write_noise_free=False,
    n_vesicles=None,
    n_fiducials=None,
    defocus_jitter_um=0.1,
    contrast_volts=1.0,
    write_halves=False,
):
    """Pack a grand model, acquire its tomogram and write both; return a JSON-able summary.

    Deterministic: one seed gives byte-identical volumes. Packing and acquisition draw
    from independent streams spawned from the seed, so changing an acquisition parameter
    leaves the grand model unchanged. Everything is validated and computed before the
    first file is written.
    """
    started = time.perf_counter()
    _validate(tuple(shape), voxel_size, seed)
    shape = tuple(int(s) for s in shape)
    params = AcquisitionParams(
        tilt_range=tuple(float(t) for t in tilt_range),
        tilt_step=float(tilt_step),
        defocus_um=float(defocus_um),
        defocus_jitter_um=float(defocus_jitter_um),
        dose=float(dose),
        voltage_kv=float(voltage_kv),
        cs_mm=float(cs_mm),
        amplitude_contrast=float(amplitude_contrast),
        contrast_volts=float(contrast_volts),
    )
    params.validate()

    # the halves' split draws from a third stream: the other volumes are the same with
    # or without halves
    pack_rng, acquire_rng, halves_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(3)
    )
    model = pack(
        shape,
        voxel_size,
        pack_rng,
        classes=classes,
        n_particles=n_particles,
        n_vesicles=n_vesicles,
        n_fiducials=n_fiducials,
    )
    tomogram = acquire(
        model.density, voxel_size, params, acquire_rng, halves_rng if write_halves else None
    )
    noisy, clean = tomogram.reconstruction, tomogram.reconstruction_noisefree
    correlation = _correlation(noisy, model.density)
    correlation_clean = _correlation(clean, model.density)
    noise_variance = float(np.var(noisy - clean, dtype=np.float64))
    snr = float(np.var(clean, dtype=np.float64)) / noise_variance if noise_variance > 0 else None

    outdir = os.fspath(outdir)
    os.makedirs(outdir, exist_ok=True)
    paths = {
        name: os.path.join(outdir, name)
        for name in (
            "reconstruction.mrc",
            "grandmodel.mrc",
            "class_mask.mrc",
            "occupancy_mask.mrc",
            "particle_locations.txt",
            "class_conversion_table.txt",
            "tilt_angles.txt",
            "phantom.json",
        )
    }
    write_mrc(paths["reconstruction.mrc"], noisy, voxel_size)
    write_mrc(paths["grandmodel.mrc"], model.density, voxel_size)
    write_mrc(paths["class_mask.mrc"], model.class_mask, voxel_size)
    write_mrc(paths["occupancy_mask.mrc"], model.occupancy, voxel_size)
    if write_noise_free:
        paths["reconstruction_noisefree.mrc"] = os.path.join(outdir, "reconstruction_noisefree.mrc")
        write_mrc(paths["reconstruction_noisefree.mrc"], clean, voxel_size)
    if write_halves:
        for name, half in zip(("even", "odd"), tomogram.reconstruction_halves):
            paths["reconstruction_%s.mrc" % name] = os.path.join(
                outdir, "reconstruction_%s.mrc" % name
            )
            write_mrc(paths["reconstruction_%s.mrc" % name], half, voxel_size)
    write_particle_locations(paths["particle_locations.txt"], model.particles)
    with atomic_output(paths["class_conversion_table.txt"]) as tmp, open(tmp, "w") as f:
        f.write("background 0\n")
        for name, class_id in CLASS_IDS.items():
            f.write("%s %d\n" % (name, class_id))
    with atomic_output(paths["tilt_angles.txt"]) as tmp, open(tmp, "w") as f:
        f.writelines("%g\n" % a for a in tomogram.tilt_angles)

    counts = model.counts()
    summary = {
        "outdir": outdir,
        "files": {name: path for name, path in sorted(paths.items())},
        "shape": list(shape),
        "voxel_size": float(voxel_size),
        "seed": int(seed),
        "counts": counts,
        "requested": model.requested,
        "n_tilts": len(tomogram.tilt_angles),
        "pearson": _rounded(correlation),
        "pearson_noisefree": _rounded(correlation_clean),
        "snr": _rounded(snr),
    }
    record = {
        "engine": "dual-engine",
        "engine_version": __version__,
        "parameters": {
            "shape": list(shape),
            "voxel_size": float(voxel_size),
            "seed": int(seed),
            "classes": classes,
            "n_particles": n_particles,
            "n_vesicles": n_vesicles,
            "n_fiducials": n_fiducials,
            "write_noise_free": bool(write_noise_free),
            "write_halves": bool(write_halves),
            **params.as_dict(),
        },
        "slab_z": list(model.slab),
        "class_ids": dict(CLASS_IDS),
        "counts": counts,
        "requested": model.requested,
        "tilt_angles": [float(a) for a in tomogram.tilt_angles],
        "defocus_per_tilt_um": [round(float(d), 4) for d in tomogram.defocus_um],
        "pearson": correlation,
        "pearson_noisefree": correlation_clean,
        "snr": snr,
        "conventions": "arrays [z, y, x]; coordinates x y z in voxels; Euler ZXZ degrees, "
        "R = Rz(rot_Z1) Rx(rot_X) Rz(rot_Z2) applied to the template; "
        "reconstruction contrast inverted (dense = bright)",
    }
    summary["seconds"] = record["seconds"] = round(time.perf_counter() - started, 2)
    with atomic_output(paths["phantom.json"]) as tmp, open(tmp, "w") as f:
        json.dump(record, f, indent=1)
    return summary
