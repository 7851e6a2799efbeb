#!/usr/bin/env python
"""Picking benchmark as users pick (issue: denoising that improves picking): every
method's free parameters, its filter's and the DoG picker's, tuned by picking F1 on the
tuning tomogram, then applied unchanged to the test tomograms.

    python bench/run_picking.py                          # all methods (DUAL: ~30 min, 2 cores)
    python bench/run_picking.py --methods none gaussian noisefree grandmodel

The crowded set (study.SETS['crowded']): ribosomes only, 150 requested per 64x256x256
tomogram at 10 A (~115 placed, touching), distractors as the engine's defaults, contrast
0.13 V: calibrated so that raw DoG, tuned by F1, gives F1 ~0.56 (paper rule) and the
noise-free reconstruction ~0.97. Noisy domain seeds 300-303, clean domain (grand models)
304-307, tuning seed 309, test seeds 310-315.

DoG picking (bench/picking.py): sigma scale, suppression distance, margin and the number
of picks (a multiple of the true count) tuned by F1 under the paper's hit rule (within
0.29 diameter); F1 reported under that rule and within the radius, mean and sample std
over the test tomograms. Beside it, each output picked with the engine's default
suppression and the engine's earlier margin (24/28 and 1/2 of the diameter) at the same
tuned scale and top.

DUAL variants share one training each (engine defaults, the final model: no choice of
iteration by ground truth): 'dual' at the data's 10 A, 'dual_bin2' working at 20 A
(the engine resamples; the U-Net sees twice the context); '_flip' variants denoise with
the average over the wedge-preserving flips (--flip-average); '_same' variants train with
--noisy-contrast same (the tomograms' particles have the maps' contrast, as a user who
knows it can say; 'auto' finds this set's contrast too faint to measure and leaves the
polarity free).

Outputs: bench/results/picking_f1.json and its section of bench/results/tables.rst;
intermediates (outputs, models) in bench/work/picking_f1/.
"""

import argparse
import datetime
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

import picking  # noqa: E402
import report  # noqa: E402
import study  # noqa: E402
from study import SETS, VOXEL_SIZE, canonical, load_json, log, save_json  # noqa: E402

SET = "crowded"
SUPERVISED_MINUTES = 6.0  # wall-time budget of each paired ceiling
DIAMETER = study.PICK["diameter_angstrom"]

# kind: method (competitor) or reference (oracle); filter: a filter and its grid (tuned
# together with the DoG), or a DUAL variant (training config overrides, flip average).
METHODS = {
    "none": {"label": "None (raw)", "kind": "method"},
    "gaussian": {
        "label": "Gaussian smoothing",
        "kind": "method",
        "grid": {"sigma": [1.0, 2.0, 3.0, 4.0]},
    },
    "dual": {"label": "DUAL", "kind": "method", "dual": {}, "flip": False},
    "dual_flip": {"label": "DUAL, flip average", "kind": "method", "dual": {}, "flip": True},
    "dual_bin2": {
        "label": "DUAL at 20 A",
        "kind": "method",
        "dual": {"voxel_size": 20.0},
        "flip": False,
    },
    "dual_bin2_flip": {
        "label": "DUAL at 20 A, flip average",
        "kind": "method",
        "dual": {"voxel_size": 20.0},
        "flip": True,
    },
    "dual_same": {
        "label": "DUAL, contrast 'same'",
        "kind": "method",
        "dual": {"noisy_contrast": "same"},
        "flip": False,
    },
    "dual_bin2_same": {
        "label": "DUAL at 20 A, contrast 'same'",
        "kind": "method",
        "dual": {"voxel_size": 20.0, "noisy_contrast": "same"},
        "flip": False,
    },
    "dual_bin2_same_flip": {
        "label": "DUAL at 20 A, contrast 'same', flip average",
        "kind": "method",
        "dual": {"voxel_size": 20.0, "noisy_contrast": "same"},
        "flip": True,
    },
    "supervised": {
        "label": "Supervised U-Net (paired)",
        "kind": "reference",
        "supervised": {"voxel_size": 10.0},
    },
    "supervised_bin2": {
        "label": "Supervised U-Net (paired) at 20 A",
        "kind": "reference",
        "supervised": {"voxel_size": 20.0},
    },
    "noisefree": {
        "label": "Noise-free reconstruction",
        "kind": "reference",
        "volume": "reconstruction_noisefree",
    },
    "grandmodel": {"label": "Grand model", "kind": "reference", "volume": "grandmodel"},
}


class PickingStudy:
    def __init__(self, args):
        self.args = args
        self.bench = study.Bench(args.work, args.results, force=args.force)
        self.work = os.path.join(os.path.abspath(args.work), "picking_f1")
        self.set = SETS[SET]

    # ------------------------------------------------------------ volumes
    def raw_path(self, seed, name="reconstruction"):
        return os.path.join(self.bench.phantom_dir(SET, seed), name + ".mrc")

    def model(self, overrides):
        """Train (or reuse) DUAL with the engine defaults + overrides on the set's split;
        returns the final model's path and the training summary."""
        from dual_engine.model import DualConfig
        from dual_engine.train import train

        name = "_".join("%s%s" % kv for kv in sorted(overrides.items())) or "default"
        outdir = os.path.join(self.work, "dual", name)
        cfg = DualConfig.from_dict(dict(overrides))
        key = canonical(
            {
                "config": cfg.to_dict(),
                "noisy": self.set["noisy"],
                "clean": self.set["clean"],
                "phantoms": [
                    self.bench.phantom_params(SET, k) for k in self.set["noisy"] + self.set["clean"]
                ],
            }
        )
        stamp = os.path.join(outdir, "bench_model.json")
        model = os.path.join(outdir, "model.pt")
        meta = load_json(stamp)
        if meta and meta["key"] == key and os.path.exists(model) and not self.args.force:
            return model, meta
        log(
            "training DUAL %s (%d iterations, %d threads)"
            % (name, cfg.iterations, self.args.threads)
        )
        t0 = time.perf_counter()
        train(
            [self.raw_path(k) for k in self.set["noisy"]],
            [self.raw_path(k, "grandmodel") for k in self.set["clean"]],
            outdir,
            cfg,
            device="cpu",
            threads=self.args.threads,
            overwrite=True,
            given=set(overrides),
        )
        meta = {
            "key": key,
            "train_wall_seconds": round(time.perf_counter() - t0, 1),
            "threads": self.args.threads,
            "config": cfg.to_dict(),
        }
        save_json(stamp, meta)
        return model, meta

    def supervised_model(self, voxel_size):
        """The paired ceiling (bench/baselines.py: the engine's default U-Net, MSE on
        tomogram k -> grand model k of the noisy-domain seeds) at `voxel_size`, trained
        for SUPERVISED_MINUTES (cached)."""
        import baselines
        from dual_engine.model import DualConfig

        cfg = DualConfig()
        path = os.path.join(self.work, "supervised", "unet_%g.pt" % voxel_size)
        key = canonical(
            {
                "minutes": SUPERVISED_MINUTES,
                "voxel_size": voxel_size,
                "width": cfg.unet_width,
                "depth": cfg.unet_depth,
                "phantoms": [self.bench.phantom_params(SET, k) for k in self.set["noisy"]],
            }
        )
        meta = load_json(path[:-3] + ".json")
        if meta and meta.get("key") == key and os.path.exists(path) and not self.args.force:
            return path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        log("training the supervised U-Net at %g A (%g min)" % (voxel_size, SUPERVISED_MINUTES))
        summary = baselines.train_supervised(
            [self.raw_path(k) for k in self.set["noisy"]],
            [self.raw_path(k, "grandmodel") for k in self.set["noisy"]],  # paired
            path,
            minutes=SUPERVISED_MINUTES,
            width=cfg.unet_width,
            depth=cfg.unet_depth,
            size=cfg.subvolume_size,
            voxel_size=voxel_size,
            log=log,
        )
        summary["key"] = key
        save_json(path[:-3] + ".json", summary)
        return path

    def output(self, method, seed, params=None):
        """The method's standardised output on one tomogram (DUAL outputs cached)."""
        from dual_engine.io import read_mrc, standardize

        spec = METHODS[method]
        if "volume" in spec:
            return self.bench.volume(SET, seed, spec["volume"])
        raw = self.bench.volume(SET, seed, "reconstruction")
        if method == "none":
            return raw
        if method == "gaussian":
            from scipy import ndimage

            return standardize(ndimage.gaussian_filter(raw, params["sigma"]))
        if "supervised" in spec:
            from dual_engine.io import rescale, resize_to_shape

            import baselines

            size = spec["supervised"]["voxel_size"]
            model = self.supervised_model(size)
            out = baselines.supervised(rescale(raw, VOXEL_SIZE, size), model)
            return standardize(resize_to_shape(out, raw.shape))
        from dual_engine.infer import denoise

        model, meta = self.model(spec["dual"])
        path = os.path.join(self.work, "outputs", method, "seed%03d.mrc" % seed)
        stamp = path[:-4] + ".json"
        key = canonical({"model": meta["key"], "flip": spec["flip"], "seed": seed})
        cached = load_json(stamp)
        if not (cached and cached["key"] == key and os.path.exists(path)) or self.args.force:
            t0 = time.perf_counter()
            denoise(
                model,
                self.raw_path(seed),
                path,
                device="cpu",
                threads=self.args.threads,
                flip_average=spec["flip"],
            )
            save_json(stamp, {"key": key, "seconds": round(time.perf_counter() - t0, 2)})
        return standardize(np.array(read_mrc(path)[0]))

    # ------------------------------------------------------------ one method
    def run_method(self, method):
        spec = METHODS[method]
        tune_seed = self.set["tune"]
        truth = self.bench.truth(SET, tune_seed)
        grid = spec.get("grid", {})
        choices = [dict(zip(grid, values)) for values in _product(grid)] or [{}]
        best = None
        for params in choices:
            setting, rows = picking.tune(
                self.output(method, tune_seed, params), truth, VOXEL_SIZE, DIAMETER
            )
            f1 = max(r["f1_" + picking.TUNE_RULE] for r in rows)
            log("  %s %s: tuning F1 %.3f with %s" % (method, params, f1, setting))
            if best is None or f1 > best[0]:
                best = (f1, params, setting, rows)
        tuning_f1, params, setting, rows = best
        per_tomogram = []
        for seed in self.set["test"]:
            volume = self.output(method, seed, params)
            truth = self.bench.truth(SET, seed)
            row = {"seed": seed, "n_truth": len(truth)}
            for name, choice in (
                ("tuned", setting),
                ("paper_nms_margin", dict(setting, **picking.PAPER_NMS_MARGIN)),
            ):
                picks = picking.pick(volume, len(truth), VOXEL_SIZE, DIAMETER, choice)
                for rule, s in picking.score(picks, truth, VOXEL_SIZE, DIAMETER).items():
                    for k in ("precision", "recall", "f1"):
                        row["%s_%s_%s" % (name, rule, k)] = s[k]
            per_tomogram.append(row)
        keys = [k for k in per_tomogram[0] if k not in ("seed", "n_truth")]
        entry = {
            "label": spec["label"],
            "kind": spec["kind"],
            "filter_params": params,
            "dog_setting": setting,
            "tuning_f1": tuning_f1,
            "tuning_f1_by_nms_margin": _best_by(rows, ("nms", "margin")),
            "per_tomogram": per_tomogram,
            "mean": {k: float(np.mean([r[k] for r in per_tomogram])) for k in keys},
            "std": {k: float(np.std([r[k] for r in per_tomogram], ddof=1)) for k in keys},
        }
        if "dual" in spec:
            entry["training"] = {k: v for k, v in self.model(spec["dual"])[1].items() if k != "key"}
            entry["seconds_per_tomogram"] = float(
                np.mean(
                    [
                        load_json(os.path.join(self.work, "outputs", method, "seed%03d.json" % s))[
                            "seconds"
                        ]
                        for s in self.set["test"]
                    ]
                )
            )
        log(
            "== %s: F1 %.3f (paper) %.3f (radius)"
            % (method, entry["mean"]["tuned_paper_f1"], entry["mean"]["tuned_radius_f1"])
        )
        return entry

    def run(self, methods, command):
        import torch

        torch.set_num_threads(self.args.threads)
        self.bench.all_phantoms(SET)
        path = os.path.join(self.bench.results, "picking_f1.json")
        data = load_json(path, {}) or {}
        entries = data.get("methods", {})
        for method in methods:
            entries[method] = self.run_method(method)
            entries[method].update(command=command, date=_now())
            data = {
                "benchmark": "DUAL paper Table 2 on phantoms, every parameter tuned by F1",
                "updated": _now(),
                "last_command": command,
                "machine": study.machine(),
                "set": dict(
                    name=SET,
                    noisy_seeds=self.set["noisy"],
                    clean_seeds=self.set["clean"],
                    tuning_seed=self.set["tune"],
                    test_seeds=self.set["test"],
                    phantom=self.bench.phantom_params(SET, 0),
                ),
                "picking": {
                    "diameter_angstrom": DIAMETER,
                    "hit_rules_fraction_of_diameter": picking.HIT_RULES,
                    "tuned_by": "F1, %s rule, on the tuning tomogram" % picking.TUNE_RULE,
                    "grid": picking.GRID,
                    "paper_nms_margin": picking.PAPER_NMS_MARGIN,
                },
                "std": "sample standard deviation (ddof=1) over the test tomograms",
                "methods": {m: entries[m] for m in METHODS if m in entries},
            }
            save_json(path, data)
        return data


def _best_by(rows, keys):
    """[{keys..., best F1 (tuned rule) over the other parameters}] of tuning rows."""
    best = {}
    for r in rows:
        k = tuple(r[n] for n in keys)
        best[k] = max(best.get(k, 0.0), r["f1_" + picking.TUNE_RULE])
    return [dict(zip(keys, k), f1=round(f, 4)) for k, f in sorted(best.items())]


def _product(grid):
    import itertools

    return list(itertools.product(*grid.values())) if grid else []


def _now():
    return datetime.datetime.now().isoformat(timespec="seconds")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=os.path.join(HERE, "work"))
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    PickingStudy(args).run(args.methods, "python bench/run_picking.py " + " ".join(argv))
    print(report.write_tables(os.path.abspath(args.results)))


if __name__ == "__main__":
    main()
