#!/usr/bin/env python
"""Missing-wedge compensation on phantom data: the paper's Table 3, one command.

    python bench/run_wedge.py --threads 2            # after run_benchmark.py made the phantoms
    python bench/run_wedge.py --volume reconstruction_noisefree   # no noise: the mechanism
    python bench/run_wedge.py --volume denoised      # denoise first, then fill the wedge

Data: the denoising set of run_benchmark.py (64x256x256 voxels at 10 A, tilts -60..60
about Y), either its tomograms (--volume reconstruction, SNR ~0.1) or their noise-free
reconstructions (--volume reconstruction_noisefree: same CTF and wedge, no noise), or
the tomograms denoised by DUAL (--volume denoised: a denoising model with the engine's
defaults trained on the set's own split, reconstructions of 0-3 against grand models of
4-7, its final model), each a table of its own. The DUAL wedge model (the engine's
default network and schedule) trains on those volumes of seeds 0-3 alone (no grand
model: the method needs none); its iteration count is chosen on seed 9, and every score
below is on the held-out seeds 8, 10 and 11.

Methods:
  none     the tomogram as it is (its missing cone holds only reconstruction leakage)
  lowpass  iterative low-pass fill (projection onto convex sets): smooth the whole
           volume with a Gaussian, put the measured coefficients back, repeat; sigma and
           the iteration count tuned on seed 9 (by SELECTION, as DUAL's snapshot)
  dual     dual_engine.infer.compensate with the model trained by dual_engine.train
           (task 'wedge')
  dual_flip  the same, the translation averaged over the four wedge-preserving flips
           (--flip-average)

Scores, per test tomogram, mean and sample std reported:
  Table 3 (the paper's protocol, needs no ground truth): compensate T -> C1; remove a
  second missing wedge, the first one turned by 90 degrees about the tilt axis (beam
  along X; it does not overlap the first) -> R; compensate R again with the same method
  (R is turned so that its new wedge lies along Z, compensated, turned back) -> C2;
  score C2 against C1 inside the removed region: PSNR and SSIM of the volumes made of
  that region's coefficients (on C1's scale, dual_engine.metrics.
  psnr_ssim_on_reference_scale) and the correlation of the region's coefficients.
  Ground truth (phantoms only): C1 against the grand model inside the original missing
  cone, 0.02-0.3 cycles/voxel (below the first CTF zero), without the k_z axis (the
  slab's z profile, which no tomogram holds): the same three scores, PSNR and
  SSIM with each region-only volume standardised (a tomogram and a density map do not
  share a scale), and the correlation per Fourier shell (SHELL_WIDTH wide) averaged over
  the shells (the lowest shells, with most of the power, dominate the overall one).
  Kept: the correlation of C1's coefficients outside the cone (weight 1, the measured
  ones) with those of the volume compensated (1 when every measured coefficient is kept).

Outputs: bench/results/wedge.json and the Table 3 section of bench/results/tables.rst
(written by report.write_tables). Intermediates in bench/work/wedge/.
"""

import argparse
import datetime
import itertools
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import methods  # noqa: E402
import report  # noqa: E402
import study  # noqa: E402
from run_benchmark import add_common_arguments  # noqa: E402
from dual_engine import infer, metrics, wedge  # noqa: E402
from dual_engine.io import read_mrc, write_mrc  # noqa: E402

SET = "denoise"
TILT_RANGE = (-60.0, 60.0)  # the denoising set's acquisition
GT_BAND = (0.02, 0.3)  # cycles/voxel: below the first CTF zero at 3 um, 10 A
SCORE_KEY = "gt-cone-without-kz-axis, gain-matched fill"  # change -> re-score snapshots
SHELL_WIDTH = 0.02  # cycles/voxel: the per-shell correlation's shells in GT_BAND
LOWPASS_GRID = {"sigma": [0.5, 1.0, 2.0, 3.0], "iterations": [1, 5, 20, 50]}
# What the tuning seed chooses DUAL's snapshot and the fill's parameters by: the cone's
# mean per-shell correlation with the grand model (ground_truth_scores).
SELECTION = "mean_shell_correlation"
VOLUMES = {
    "reconstruction": "the phantoms' tomograms (SNR ~0.1)",
    "reconstruction_noisefree": "their noise-free reconstructions (CTF and wedge, no noise)",
    "denoised": "their DUAL-denoised tomograms (denoising model trained on the set's split)",
}
LABELS = {
    "none": "None (as reconstructed)",
    "lowpass": "Iterative low-pass fill (POCS)",
    "dual": "DUAL",
    "dual_flip": "DUAL, flip average",
}


def lowpass_fill(volume, sigma, iterations, tilt_range=TILT_RANGE):
    """Projection onto convex sets: smoothness (a Gaussian) and the measured data."""
    filled = volume
    for _ in range(iterations):
        filled = wedge.combine(volume, ndimage.gaussian_filter(filled, sigma), tilt_range)
    return filled


def shell_correlations(reference, volume, region):
    """Fourier correlation of `volume` with `reference` inside `region` (rfftn-grid
    mask), shell by shell: SHELL_WIDTH-wide shells over GT_BAND."""
    a, b = np.fft.rfftn(reference), np.fft.rfftn(volume)
    radius = wedge.radial_frequency(reference.shape)
    edges = np.arange(GT_BAND[0], GT_BAND[1] + 1e-9, SHELL_WIDTH)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        shell = region & (radius >= lo) & (radius < hi)
        x, y = a[shell], b[shell]
        energy = float(np.sum(np.abs(x) ** 2) * np.sum(np.abs(y) ** 2))
        out.append(float(np.real(np.sum(x * np.conj(y))) / np.sqrt(energy)) if energy > 0 else 0.0)
    return out


def turned(volume):
    """The volume turned by 90 degrees about Y (Z and X swapped): a wedge along X
    becomes a wedge along Z. Its own inverse."""
    return np.ascontiguousarray(np.swapaxes(volume, 0, 2))


class WedgeBench(study.PhantomStudy):
    def __init__(self, args):
        super().__init__(
            args,
            SET,
            "wedge" if args.volume == "reconstruction" else os.path.join("wedge", args.volume),
        )
        from dual_engine.model import DualConfig

        self.cfg = DualConfig(
            iterations=args.iterations, task="wedge", tilt_range=tuple(TILT_RANGE)
        )

    # ------------------------------------------------------------ inputs
    def input_path(self, seed):
        """The tomogram the methods compensate: a phantom volume, or its denoised one."""
        if self.args.volume != "denoised":
            return self.path(seed, self.args.volume)
        return self.denoised(seed)

    def denoiser(self):
        """The denoising model of --volume denoised (the set's engine-default model)."""
        return self.default_denoiser(self.args.threads)

    def denoised(self, seed):
        model, key = self.denoiser()
        path = os.path.join(self.work, "denoised", "seed%03d.mrc" % seed)
        stamp = path[:-4] + ".json"
        meta = study.load_json(stamp)
        if not (meta and meta["key"] == key and os.path.exists(path)) or self.args.force:
            infer.denoise(model, self.path(seed, "reconstruction"), path, threads=self.args.threads)
            study.save_json(stamp, {"key": key})
        return path

    # ------------------------------------------------------------ methods
    def dual_model(self):
        s = study.SETS[SET]
        noisy = [self.input_path(k) for k in s["noisy"]]
        key = study.canonical(
            {
                "config": self.cfg.to_dict(),
                "noisy": s["noisy"],
                "select_every": self.args.select_every,
                "tune": s["tune"],
                "phantoms": [self.bench.phantom_params(SET, k) for k in s["noisy"] + [s["tune"]]],
                "denoiser": self.denoiser()[1] if self.args.volume == "denoised" else None,
            }
        )
        outdir = os.path.join(self.work, "dual")

        def score(snapshot):
            return self.ground_truth_scores(
                s["tune"],
                self.compensate_file("dual", snapshot, self.input_path(s["tune"]), "tune"),
            )

        record = methods.train_with_snapshots(
            noisy,
            noisy,
            outdir,
            self.cfg,
            self.args.select_every,
            self.args.threads,
            key,
            score,
            SELECTION,
            self.args.force,
            "DUAL wedge model",
            score_key=SCORE_KEY,
        )
        return methods.snapshot_path(outdir, record["chosen_iteration"]), record

    def compensate_file(self, method, model, path, name, params=None):
        """Method output for the volume file `path` (written to work/<method>/<name>.mrc)."""
        out = os.path.join(self.work, method, name + ".mrc")
        if method.startswith("dual"):
            infer.compensate(
                model,
                path,
                out,
                tilt_range=TILT_RANGE,
                device="cpu",
                threads=self.args.threads,
                flip_average=method == "dual_flip",
            )
            return np.array(read_mrc(out)[0], dtype=np.float32)
        volume = np.array(read_mrc(path)[0], dtype=np.float32)
        if method == "none":
            return volume
        return lowpass_fill(volume, **params)

    def tune_lowpass(self):
        seed = study.SETS[SET]["tune"]
        rows = []
        for sigma, iterations in itertools.product(*LOWPASS_GRID.values()):
            params = {"sigma": sigma, "iterations": iterations}
            out = lowpass_fill(self.load_input(seed), **params)
            rows.append(dict(params, **self.ground_truth_scores(seed, out)))
            study.log("  lowpass %s: %s" % (params, rows[-1][SELECTION]))
        best = max(rows, key=lambda r: r[SELECTION])
        return {"sigma": best["sigma"], "iterations": best["iterations"]}, rows

    # ------------------------------------------------------------ scores
    def ground_truth_scores(self, seed, compensated):
        """Against the grand model, whose scale differs from a tomogram's: each region-only
        volume is standardised on its own (the correlation is scale-free anyway). The
        k_z axis (k_x = k_y = 0: the mean density of each z plane, i.e. the specimen
        slab's profile) is left out: the reconstruction holds none of it and no local
        method can restore it, yet its power would dominate the cone's."""
        cone = wedge.cone_mask(compensated.shape, TILT_RANGE, band=GT_BAND).copy()
        cone[:, 0, 0] = False
        grand_model = self.load(seed, "grandmodel")
        scores = metrics.fourier_region_scores(grand_model, compensated, cone, same_scale=False)
        scores["shell_correlation"] = shell_correlations(grand_model, compensated, cone)
        scores["mean_shell_correlation"] = float(np.mean(scores["shell_correlation"]))
        return scores

    def load_input(self, seed):
        return np.array(read_mrc(self.input_path(seed))[0], dtype=np.float32)

    def kept_correlation(self, seed, compensated):
        """Correlation of the measured coefficients (weight 1) of the compensated volume
        with those of the volume it compensated."""
        measured = wedge.measured_weight(compensated.shape, TILT_RANGE) == 1
        measured[0, 0, 0] = False  # the mean
        return metrics.fourier_region_scores(
            self.load_input(seed), compensated, measured, same_scale=False
        )["fourier_correlation"]

    def table3_scores(self, method, model, params, seed, first):
        """Remove the second wedge from the first compensation, compensate again, score."""
        removed = turned(wedge.remove_wedge(turned(first), TILT_RANGE))
        name = "seed%03d_second_input" % seed
        path = os.path.join(self.work, method, name + ".mrc")
        write_mrc(path, turned(removed), study.VOXEL_SIZE)
        second = turned(self.compensate_file(method, model, path, "seed%03d_second" % seed, params))
        return metrics.fourier_region_scores(
            first, second, wedge.turned_cone_mask(first.shape, TILT_RANGE)
        )

    # ------------------------------------------------------------ run
    def run(self):
        self.bench.all_phantoms(SET)
        s = study.SETS[SET]
        results = {
            "benchmark": "DUAL paper Table 3 (missing wedge) on phantoms",
            "command": "python bench/run_wedge.py " + " ".join(self.args.argv),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": study.machine(),
            "tilt_range": list(TILT_RANGE),
            "ground_truth_band_cycles_per_voxel": list(GT_BAND),
            "train_seeds": s["noisy"],
            "tuning_seed": s["tune"],
            "test_seeds": s["test"],
            "methods": {},
        }
        for method in self.args.methods:
            os.makedirs(os.path.join(self.work, method), exist_ok=True)
            model, params, entry = None, None, {"label": LABELS[method]}
            if method.startswith("dual"):
                model, record = self.dual_model()
                entry["training"] = {
                    k: record[k]
                    for k in (
                        "chosen_iteration",
                        "train_wall_seconds",
                        "seconds_to_chosen",
                        "threads",
                        "snapshots",
                    )
                }
                entry["config"] = self.cfg.to_dict()
            elif method == "lowpass":
                params, rows = self.tune_lowpass()
                entry["params"], entry["tuning"] = params, rows
            per = []
            for seed in s["test"]:
                t0 = time.perf_counter()
                first = self.compensate_file(
                    method, model, self.input_path(seed), "seed%03d" % seed, params
                )
                seconds = time.perf_counter() - t0
                row = {"seed": seed, "seconds": round(seconds, 2)}
                row.update({"gt_" + k: v for k, v in self.ground_truth_scores(seed, first).items()})
                row["kept_correlation"] = self.kept_correlation(seed, first)
                row.update(
                    {
                        "t3_" + k: v
                        for k, v in self.table3_scores(method, model, params, seed, first).items()
                    }
                )
                per.append(row)
                study.log(
                    "  %s seed %d: %s"
                    % (
                        method,
                        seed,
                        {
                            k: round(v, 3)
                            for k, v in row.items()
                            if k != "seed" and not isinstance(v, list)
                        },
                    )
                )
            keys = [k for k in per[0] if k not in ("seed", "gt_shell_correlation")]
            entry["per_tomogram"] = per
            entry["mean"] = {k: float(np.mean([r[k] for r in per])) for k in keys}
            entry["std"] = {k: float(np.std([r[k] for r in per], ddof=1)) for k in keys}
            entry["mean_shell_correlation_by_shell"] = np.mean(
                [r["gt_shell_correlation"] for r in per], axis=0
            ).tolist()
            entry["shell_edges_cycles_per_voxel"] = [
                round(x, 4) for x in np.arange(GT_BAND[0], GT_BAND[1] + 1e-9, SHELL_WIDTH)
            ]
            results["methods"][method] = entry
        path = os.path.join(os.path.abspath(self.args.results), "wedge.json")
        old = study.load_json(path, {}) or {}
        conditions = dict(old.get("conditions", {}))
        merged = dict(conditions.get(self.args.volume, {}).get("methods", {}))
        merged.update(results["methods"])
        results["methods"] = {m: merged[m] for m in LABELS if m in merged}
        results["volume"] = self.args.volume
        conditions[self.args.volume] = results
        study.save_json(
            path, {"conditions": {v: conditions[v] for v in VOLUMES if v in conditions}}
        )
        print(report.write_tables(os.path.abspath(self.args.results)))


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", nargs="+", choices=list(LABELS), default=list(LABELS))
    ap.add_argument(
        "--volume",
        choices=list(VOLUMES),
        default="reconstruction",
        help="which phantom volumes are the tomograms (default: reconstruction)",
    )
    ap.add_argument(
        "--iterations",
        type=int,
        default=600,
        help="most iterations the wedge model trains (default 600, the engine's)",
    )
    ap.add_argument(
        "--select-every",
        type=int,
        default=200,
        help="score a snapshot on the tuning tomogram every N iterations",
    )
    add_common_arguments(ap, threads=2)
    args = ap.parse_args(argv)
    args.argv = list(argv)
    return args


if __name__ == "__main__":
    WedgeBench(parse(sys.argv[1:])).run()
