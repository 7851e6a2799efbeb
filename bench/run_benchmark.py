#!/usr/bin/env python
"""DUAL denoising benchmark on phantom data: the paper's Table 1 (PSNR/SSIM) and
Table 2 (DoG picking precision/recall/F1), one command.

    source /path/to/venv/bin/activate && bash bench/setup.sh     # once: bm4d, topaz-em
    python bench/run_benchmark.py                                # everything, with DUAL
    python bench/run_benchmark.py --no-dual                      # baselines only
    python bench/run_benchmark.py --methods gaussian nad --sets denoise

Outputs: bench/results/denoise.json, bench/results/picking.json, bench/results/tables.rst
(each with the command, date, machine and every method's parameters). Intermediate
volumes live in bench/work/ (gitignored); a re-run reuses every phantom, tuning result,
trained model and denoised volume whose parameters did not change (--force redoes them).
Results of methods not run this time are kept from the previous results files.

Data (dual_engine.synth.phantom.make_phantom, 64x256x256 voxels at 10 A by default), the
paper's split of SHREC 2021 (Methods, "Datasets"), per set:
  denoise  all classes, engine-default acquisition (dose 100 e/A^2, contrast 1 V)
           noisy domain = reconstructions of seeds 0-3, clean domain = grand models of
           seeds 4-7, tuning tomogram seed 9, test tomograms seeds 8, 10, 11
  picking  the ribosome-benchmark look-alike: ribosomes only, crowded (150 requested,
           ~110 placed, nearest-neighbour distance ~24 nm), contrast 0.15 V (raw DoG F1
           ~0.55-0.6, calibrated by measurement, see bench/README.md);
           noisy domain seeds 100-103, clean domain seeds 104-107, tuning seed 109,
           test seeds 110-114
Every baseline's free parameters are tuned per set on that set's tuning tomogram (grid
search, maximum SSIM against the grand model); the test tomograms are never used for
tuning. DUAL and the supervised ceiling are trained on the set's own training split.
"""
import argparse
import datetime
import itertools
import json
import os
import platform
import shutil
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")   # before numpy/torch: stay on one core
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import baselines  # noqa: E402
from dual_engine import metrics  # noqa: E402
from dual_engine.io import read_mrc, read_particle_locations, standardize, write_mrc  # noqa: E402

VOXEL_SIZE = 10.0
SHAPE = (64, 256, 256)

# ------------------------------------------------------------------ datasets
SETS = {
    "denoise": {
        "phantom": {},   # engine defaults: all classes, dose 100, contrast_volts 1.0
        "noisy": [0, 1, 2, 3], "clean": [4, 5, 6, 7], "tune": 9, "test": [8, 10, 11],
    },
    "picking": {
        "phantom": {"classes": ["ribosome"], "n_particles": 150, "contrast_volts": 0.15},
        "noisy": [100, 101, 102, 103], "clean": [104, 105, 106, 107], "tune": 109,
        "test": [110, 111, 112, 113, 114],
    },
}

# DoG picking protocol (paper, Methods "Template-free particle picking", scaled).
PICK = {
    "class": "ribosome",
    "diameter_angstrom": 280.0,     # ~28 nm ribosome, as the paper; sigma1 = r/sqrt(3) = 8.1 nm
    "min_distance_angstrom": 200.0,  # NMS; paper 24 nm, see README: crowding
    "margin_angstrom": 70.0,        # quarter diameter: particles touching a face stay pickable
    "top_factor": 1.2,              # top-N = 1.2 x true count (paper: 500 picks, ~410 ribosomes)
    "match_distance_angstrom": 80.0,  # paper: within 8 nm of a true centre
    "polarity": "bright",           # every volume here is dense = bright
}

# ------------------------------------------------------------------ methods
# kind: "method" (competitor) or "reference" (ceiling, reported beside, not counted).
# grid: parameter name -> values (tuned by maximum SSIM vs the grand model);
# region: "full" tuning tomogram or its central "crop" (64 x 128 x 128) for slow methods.
METHODS = {
    "none": {"label": "None", "kind": "method", "grid": {}},
    "gaussian": {"label": "Gaussian smoothing", "kind": "method", "region": "full",
                 "grid": {"sigma": [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]}},
    "nad": {"label": "NAD (Perona-Malik)", "kind": "method", "region": "full",
            "grid": {"kappa": [0.5, 1.0, 2.0, 4.0, 8.0],
                     "iterations": [5, 10, 20, 40, 80, 160]}},
    "nlm": {"label": "NLM", "kind": "method", "region": "crop",
            "grid": {"h": [0.6, 1.0, 1.6, 2.4, 3.2], "patch_size": [5, 7],
                     "patch_distance": [3, 5]}},
    "bm4d": {"label": "BM4D", "kind": "method", "region": "crop",
             "grid": {"sigma": [1.0, 2.0, 3.0, 4.5, 6.5]}},
    "topaz10a": {"label": "Topaz-3D unet-3d-10a", "kind": "method", "region": "crop",
                 "fixed": {"model": "unet-3d-10a"}, "grid": {"polarity": ["dark", "bright"]}},
    "topaz20a": {"label": "Topaz-3D unet-3d-20a", "kind": "method", "region": "crop",
                 "fixed": {"model": "unet-3d-20a"}, "grid": {"polarity": ["dark", "bright"]}},
    "dual": {"label": "DUAL", "kind": "method", "grid": {}},
    "noisefree_gaussian": {"label": "Noise-free reconstruction + best Gaussian",
                           "kind": "reference", "region": "full",
                           "grid": {"sigma": [0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0]}},
    "supervised": {"label": "Supervised 3-D U-Net (paired)", "kind": "reference", "grid": {}},
}
ORDER = list(METHODS)
DEFAULT_METHODS = [m for m in ORDER if m != "dual"]


def log(*args):
    print(time.strftime("%H:%M:%S"), *args, flush=True)


# ------------------------------------------------------------------ helpers
def load_json(path, default=None):
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return default


def save_json(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, default=_jsonable)
    os.replace(tmp, path)


def _jsonable(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


def canonical(d):
    return json.loads(json.dumps(d, sort_keys=True, default=_jsonable))


def crop(volume):
    """Central tuning region of a volume: full z, the central half in y and x."""
    _, ny, nx = volume.shape
    return volume[:, ny // 4: ny // 4 + ny // 2, nx // 4: nx // 4 + nx // 2]


def machine():
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import torch
    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "numpy": np.__version__, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def train_with_snapshots(noisy, clean, outdir, cfg, step, threads, key, score, criterion,
                         force=False, label="DUAL", score_key=None):
    """Train DUAL (dual_engine.train.train) to cfg.iterations in chunks of `step`
    iterations, each resuming from the previous chunk's checkpoint (bit-identical to one
    uninterrupted run), keep a snapshot after each chunk, score it with `score(path)` ->
    dict, and choose the snapshot with the highest `criterion`.

    The record (outdir/bench_training.json) is saved after each chunk, so an interrupted
    run resumes; a record with another `key` (config, data) starts over; one with another
    `score_key` (how snapshots are scored) re-scores the snapshots it has. Returns it, with
    "chosen_iteration", "train_wall_seconds" (training only, all chunks) and
    "seconds_to_chosen"; the chosen model is outdir/snapshots/iterNNNNN.pt.
    """
    from dual_engine.model import DualConfig
    from dual_engine.train import MODEL, train
    record_path = os.path.join(outdir, "bench_training.json")
    record = load_json(record_path)
    if not (record and record.get("key") == key) or force:
        if os.path.isdir(outdir):
            shutil.rmtree(outdir)
        record = {"key": key, "threads": threads, "snapshots": []}
    os.makedirs(os.path.join(outdir, "snapshots"), exist_ok=True)
    if record.get("score_key") != score_key:
        for row in record["snapshots"]:
            row.update(score(snapshot_path(outdir, row["iteration"])))
        record["score_key"] = score_key
        save_json(record_path, record)
    done = {r["iteration"] for r in record["snapshots"]}
    targets = list(range(step, cfg.iterations + 1, step))
    if not targets or targets[-1] != cfg.iterations:
        targets.append(cfg.iterations)
    for target in targets:
        if target in done:
            continue
        log("training %s: to iteration %d of %d, %d thread(s)"
            % (label, target, cfg.iterations, threads))
        chunk = DualConfig.from_dict(dict(cfg.to_dict(), iterations=target))
        t0 = time.perf_counter()
        train(noisy, clean, outdir, chunk, resume=True, device="cpu", threads=threads)
        seconds = time.perf_counter() - t0
        snapshot = snapshot_path(outdir, target)
        shutil.copyfile(os.path.join(outdir, MODEL), snapshot)
        row = {"iteration": target, "chunk_seconds": round(seconds, 1)}
        row.update(score(snapshot))
        record["snapshots"].append(row)
        record["snapshots"].sort(key=lambda r: r["iteration"])
        save_json(record_path, record)
        log("  iteration %d: %s (chunk %.0f s)" % (target, ", ".join(
            "%s %.4f" % (k, v) for k, v in row.items() if k not in ("iteration",
                                                                  "chunk_seconds")), seconds))
    rows = [r for r in record["snapshots"] if r["iteration"] in targets]
    best = max(rows, key=lambda r: r[criterion])
    record["chosen_iteration"] = best["iteration"]
    record["train_wall_seconds"] = round(sum(r["chunk_seconds"] for r in rows), 1)
    record["seconds_to_chosen"] = round(sum(r["chunk_seconds"] for r in rows
                                            if r["iteration"] <= best["iteration"]), 1)
    save_json(record_path, record)
    log("  %s: chosen iteration %d (%s %.4f)" % (label, best["iteration"], criterion,
                                                best[criterion]))
    return record


def snapshot_path(outdir, iteration):
    return os.path.join(outdir, "snapshots", "iter%05d.pt" % iteration)


# ------------------------------------------------------------------ the benchmark
class Bench:
    def __init__(self, args):
        self.args = args
        self.work = os.path.abspath(args.work)
        self.results = os.path.abspath(args.results)
        self.shape = tuple(args.shape)
        self.dual_cfg = self._dual_config()

    # ---------------------------------------------------------------- phantoms
    def phantom_params(self, set_name, seed):
        params = dict(shape=list(self.shape), voxel_size=VOXEL_SIZE, seed=int(seed),
                      write_noise_free=True)
        params.update(SETS[set_name]["phantom"])
        if set_name == "picking" and self.args.pick_contrast is not None:
            params["contrast_volts"] = self.args.pick_contrast
        return params

    def phantom_dir(self, set_name, seed):
        return os.path.join(self.work, "phantoms", set_name, "seed%03d" % seed)

    def phantom(self, set_name, seed):
        """Make (or reuse) one phantom; returns its directory."""
        from dual_engine.synth.phantom import make_phantom
        outdir = self.phantom_dir(set_name, seed)
        params = self.phantom_params(set_name, seed)
        stamp = os.path.join(outdir, "bench_params.json")
        if (not self.args.force and os.path.exists(os.path.join(outdir, "phantom.json"))
                and load_json(stamp) == canonical(params)):
            return outdir
        if os.path.isdir(outdir):
            shutil.rmtree(outdir)
        log("phantom %s seed %d" % (set_name, seed))
        p = dict(params)
        make_phantom(outdir, shape=tuple(p.pop("shape")), **p)
        save_json(stamp, canonical(params))
        return outdir

    def all_phantoms(self, set_name):
        s = SETS[set_name]
        for seed in s["noisy"] + s["clean"] + [s["tune"]] + s["test"]:
            self.phantom(set_name, seed)

    def volume(self, set_name, seed, name):
        """A standardised float32 volume of a phantom (reconstruction, grandmodel, ...)."""
        path = os.path.join(self.phantom_dir(set_name, seed), name + ".mrc")
        return standardize(np.array(read_mrc(path)[0]))

    def truth(self, set_name, seed):
        path = os.path.join(self.phantom_dir(set_name, seed), "particle_locations.txt")
        return np.array([p.xyz for p in read_particle_locations(path)
                         if p.name == PICK["class"]]).reshape(-1, 3)

    # ---------------------------------------------------------------- methods
    def apply(self, method, volume, params, set_name=None, noisefree=None):
        """Run one method on one standardised volume with the given parameters."""
        spec = METHODS[method]
        p = dict(spec.get("fixed", {}))
        p.update(params)
        if method == "none":
            return baselines.identity(volume)
        if method == "gaussian":
            return baselines.gaussian(volume, **p)
        if method == "nad":
            return baselines.anisotropic_diffusion(volume, **p)
        if method == "nlm":
            return baselines.nlm(volume, **p)
        if method == "bm4d":
            return baselines.bm4d(volume, **p)
        if method.startswith("topaz"):
            return baselines.topaz(volume, **p)
        if method == "noisefree_gaussian":
            return baselines.noisefree_gaussian(noisefree, **p)
        if method == "supervised":
            return baselines.supervised(volume, self.supervised_model(set_name))
        raise ValueError(method)

    def tune(self, set_name, method):
        """Grid search on the tuning tomogram; returns the chosen parameters (cached)."""
        spec = METHODS[method]
        if not spec["grid"]:
            return {}, None
        seed = SETS[set_name]["tune"]
        path = os.path.join(self.work, "tuning", set_name, method + ".json")
        key = canonical({"grid": spec["grid"], "fixed": spec.get("fixed", {}),
                         "region": spec["region"],
                         "phantom": self.phantom_params(set_name, seed)})
        cached = load_json(path)
        if cached and cached.get("key") == key and not self.args.force:
            return cached["best"], cached
        noisy = self.volume(set_name, seed, "reconstruction")
        gm = self.volume(set_name, seed, "grandmodel")
        nf = self.volume(set_name, seed, "reconstruction_noisefree")
        truth = self.truth(set_name, seed) if set_name == "picking" else None
        if spec["region"] == "crop":
            _, ny, nx = noisy.shape
            noisy, gm, nf = (standardize(crop(v)) for v in (noisy, gm, nf))
            if truth is not None:  # particle centres inside the crop, in its voxels
                truth = truth - np.array([nx // 4, ny // 4, 0])
                inside = np.all((truth >= 0) & (truth <= np.array(noisy.shape[::-1]) - 1),
                                axis=1)
                truth = truth[inside]
        names = list(spec["grid"])
        rows = []
        log("tuning %s/%s on seed %d (%s): %d settings"
            % (set_name, method, seed, spec["region"],
               int(np.prod([len(v) for v in spec["grid"].values()]))))
        for values in itertools.product(*(spec["grid"][n] for n in names)):
            params = dict(zip(names, values))
            t0 = time.perf_counter()
            out = self.apply(method, noisy, params, set_name, noisefree=nf)
            seconds = time.perf_counter() - t0
            row = {"params": params, "ssim_gm": metrics.ssim(gm, out),
                   "psnr_gm": metrics.psnr(gm, out), "seconds": round(seconds, 2)}
            if truth is not None:  # recorded, not used for the choice (SSIM is)
                row["f1"] = self.pick_scores(out, truth)["f1"]
            rows.append(row)
            log("  %s  SSIM %.4f  PSNR %.2f%s  (%.1f s)"
                % (params, row["ssim_gm"], row["psnr_gm"],
                   ("  F1 %.3f" % row["f1"]) if "f1" in row else "", seconds))
        best = max(rows, key=lambda r: r["ssim_gm"])["params"]
        edge = [n for n in names if len(spec["grid"][n]) > 1
                and best[n] in (spec["grid"][n][0], spec["grid"][n][-1])
                and not isinstance(best[n], str)]
        result = {"key": key, "tomogram_seed": seed, "region": spec["region"],
                  "criterion": "max SSIM vs grand model", "best": best, "rows": rows,
                  "best_on_grid_edge": edge}
        save_json(path, result)
        log("  -> %s%s" % (best, ("  (on the grid edge: %s)" % edge) if edge else ""))
        return best, result

    def output_path(self, set_name, method, seed):
        return os.path.join(self.work, "outputs", set_name, method, "seed%03d.mrc" % seed)

    def denoised(self, set_name, method, seed, params):
        """The method's output on one test tomogram (cached with its parameters)."""
        path = self.output_path(set_name, method, seed)
        meta_path = path[:-4] + ".json"
        key = canonical({"params": params, "fixed": METHODS[method].get("fixed", {}),
                         "phantom": self.phantom_params(set_name, seed),
                         "model": self._model_stamp(set_name, method)})
        meta = load_json(meta_path)
        if (meta and meta.get("key") == key and os.path.exists(path)
                and not self.args.force):
            return standardize(np.array(read_mrc(path)[0])), meta["seconds"]
        noisy = self.volume(set_name, seed, "reconstruction")
        nf = (self.volume(set_name, seed, "reconstruction_noisefree")
              if method == "noisefree_gaussian" else None)
        t0 = time.perf_counter()
        out = self.apply(method, noisy, params, set_name, noisefree=nf)
        seconds = round(time.perf_counter() - t0, 2)
        write_mrc(path, out, VOXEL_SIZE)
        save_json(meta_path, {"key": key, "seconds": seconds})
        log("  %s/%s seed %d: %.1f s" % (set_name, method, seed, seconds))
        return standardize(out), seconds

    def _model_stamp(self, set_name, method):
        if method == "supervised":
            s = load_json(self.supervised_model(set_name, train=False)[:-3] + ".json") or {}
            return {k: s.get(k) for k in ("iterations", "seconds", "key")}
        return None

    # ---------------------------------------------------------------- supervised
    def supervised_model(self, set_name, train=True):
        path = os.path.join(self.work, "supervised", set_name, "unet.pt")
        if not train:
            return path
        s = SETS[set_name]
        noisy = [os.path.join(self.phantom_dir(set_name, k), "reconstruction.mrc")
                 for k in s["noisy"]]
        clean = [os.path.join(self.phantom_dir(set_name, k), "grandmodel.mrc")
                 for k in s["noisy"]]   # the SAME phantoms: paired
        key = canonical({"minutes": self.args.supervised_minutes,
                         "width": self.dual_cfg.unet_width, "depth": self.dual_cfg.unet_depth,
                         "size": self.dual_cfg.subvolume_size,
                         "phantoms": [self.phantom_params(set_name, k) for k in s["noisy"]]})
        meta_path = path[:-3] + ".json"
        meta = load_json(meta_path)
        if meta and meta.get("key") == key and os.path.exists(path) and not self.args.force:
            return path
        log("training the supervised U-Net for %s (%g min, width %d, depth %d)"
            % (set_name, self.args.supervised_minutes, self.dual_cfg.unet_width,
               self.dual_cfg.unet_depth))
        summary = baselines.train_supervised(
            noisy, clean, path, minutes=self.args.supervised_minutes,
            width=self.dual_cfg.unet_width, depth=self.dual_cfg.unet_depth,
            size=self.dual_cfg.subvolume_size, voxel_size=VOXEL_SIZE, log=log)
        summary["key"] = key
        save_json(meta_path, summary)
        return path

    # ---------------------------------------------------------------- DUAL
    def _dual_config(self):
        from dual_engine.model import DualConfig
        values = load_json(self.args.dual_config, {}) if self.args.dual_config else {}
        values = {k: v for k, v in values.items() if not k.startswith("_")}
        if self.args.dual_iterations is not None:
            values["iterations"] = self.args.dual_iterations
        return DualConfig.from_dict(values)

    def run_dual(self, set_name):
        """Train DUAL on the set's unpaired split, choose its iteration count on the tuning
        tomogram, and denoise the test tomograms with the chosen snapshot.

        Noisy domain: reconstructions of the set's noisy seeds; clean domain: grand models
        of its (different) clean seeds. Training (dual_engine.train.train, config from
        --dual-config / --dual-iterations) runs in chunks of --dual-select-every
        iterations, each resuming from the previous chunk's checkpoint (bit-identical to
        one uninterrupted run); after each chunk the model denoises the tuning tomogram and
        is scored like the baselines' parameters (maximum SSIM vs the grand model). The
        iteration count is DUAL's one tuned parameter; the test tomograms never see it.
        Returns {seed: (volume, inference seconds)} and the training record.
        """
        import torch
        from dual_engine.infer import denoise
        s = SETS[set_name]
        cfg = self.dual_cfg
        step = self.args.dual_select_every
        outdir = os.path.join(self.work, "dual", set_name)
        noisy = [os.path.join(self.phantom_dir(set_name, k), "reconstruction.mrc")
                 for k in s["noisy"]]
        clean = [os.path.join(self.phantom_dir(set_name, k), "grandmodel.mrc")
                 for k in s["clean"]]
        tune_seed = s["tune"]
        tune_path = os.path.join(self.phantom_dir(set_name, tune_seed), "reconstruction.mrc")
        gm = self.volume(set_name, tune_seed, "grandmodel")
        key = canonical({"config": cfg.to_dict(), "select_every": step,
                         "noisy": s["noisy"], "clean": s["clean"], "tune": tune_seed,
                         "phantoms": [self.phantom_params(set_name, k)
                                      for k in s["noisy"] + s["clean"] + [tune_seed]]})

        def score(snapshot):
            tuned = os.path.join(outdir, "tune.mrc")
            denoise(snapshot, tune_path, tuned, device="cpu", threads=self.args.threads)
            out = standardize(np.array(read_mrc(tuned)[0]))
            return {"ssim_gm": metrics.ssim(gm, out), "psnr_gm": metrics.psnr(gm, out)}

        record = train_with_snapshots(noisy, clean, outdir, cfg, step, self.args.threads,
                                      key, score, "ssim_gm", self.args.force,
                                      "DUAL for %s" % set_name)
        chosen = record["chosen_iteration"]
        model_path = snapshot_path(outdir, chosen)
        outputs = {}
        for seed in s["test"]:
            path = self.output_path(set_name, "dual", seed)
            meta_path = path[:-4] + ".json"
            okey = canonical({"model": key, "iteration": chosen,
                              "phantom": self.phantom_params(set_name, seed)})
            meta = load_json(meta_path)
            if not (meta and meta.get("key") == okey and os.path.exists(path)
                    and not self.args.force):
                t0 = time.perf_counter()
                denoise(model_path,
                        os.path.join(self.phantom_dir(set_name, seed), "reconstruction.mrc"),
                        path, device="cpu", threads=self.args.threads)
                meta = {"key": okey, "seconds": round(time.perf_counter() - t0, 2)}
                save_json(meta_path, meta)
                log("  %s/dual seed %d: %.1f s" % (set_name, seed, meta["seconds"]))
            outputs[seed] = (standardize(np.array(read_mrc(path)[0])), meta["seconds"])
        torch.set_num_threads(self.args.threads)
        return outputs, record

    # ---------------------------------------------------------------- scoring
    def score_denoise(self, set_name, seed, out):
        gm = self.volume(set_name, seed, "grandmodel")
        nf = self.volume(set_name, seed, "reconstruction_noisefree")
        return {"psnr_gm": metrics.psnr(gm, out), "ssim_gm": metrics.ssim(gm, out),
                "psnr_nf": metrics.psnr(nf, out), "ssim_nf": metrics.ssim(nf, out)}

    @staticmethod
    def pick_scores(volume, truth):
        """The DoG protocol (PICK) on one volume, scored against truth centres (x, y, z)."""
        from dual_engine.pick import dog_pick
        top = max(1, int(round(PICK["top_factor"] * len(truth))))
        xyz, _ = dog_pick(volume, VOXEL_SIZE, PICK["diameter_angstrom"], top=top,
                          min_distance=PICK["min_distance_angstrom"],
                          margin=PICK["margin_angstrom"], polarity=PICK["polarity"])
        r = metrics.match_picks(xyz, truth, PICK["match_distance_angstrom"] / VOXEL_SIZE)
        r["top"] = top
        return r

    def score_picks(self, set_name, seed, out):
        r = self.pick_scores(out, self.truth(set_name, seed))
        gm = self.volume(set_name, seed, "grandmodel")
        return {"precision": r["precision"], "recall": r["recall"], "f1": r["f1"],
                "tp": r["tp"], "n_picks": r["n_picks"], "n_truth": r["n_truth"],
                "top": r["top"], "ssim_gm": metrics.ssim(gm, out),
                "psnr_gm": metrics.psnr(gm, out)}

    # ---------------------------------------------------------------- one set
    def run_set(self, set_name, methods):
        s = SETS[set_name]
        self.all_phantoms(set_name)
        entries = {}   # the methods run by THIS invocation
        score = self.score_denoise if set_name == "denoise" else self.score_picks
        for method in methods:
            spec = METHODS[method]
            log("== %s / %s" % (set_name, method))
            entry = {"label": spec["label"], "kind": spec["kind"],
                     "command": self.command, "date": self.date}
            if method == "dual":
                outputs, record = self.run_dual(set_name)
                entry["params"] = {"dual_config": self.dual_cfg.to_dict()}
                entry["train_wall_seconds"] = record["train_wall_seconds"]
                entry["seconds_to_chosen"] = record["seconds_to_chosen"]
                entry["train_threads"] = record["threads"]
                entry["tuning"] = {"tomogram_seed": s["tune"], "criterion":
                                   "max SSIM vs grand model over training snapshots",
                                   "chosen_iteration": record["chosen_iteration"],
                                   "snapshots": record["snapshots"]}
            else:
                best, tuning = self.tune(set_name, method)
                entry["params"] = dict(spec.get("fixed", {}), **best)
                if tuning:
                    entry["tuning"] = {k: tuning[k] for k in
                                       ("tomogram_seed", "region", "criterion",
                                        "best_on_grid_edge")}
                    entry["tuning"]["grid"] = spec["grid"]
                    rows = tuning["rows"]
                    entry["tuning"]["chosen"] = max(rows, key=lambda r: r["ssim_gm"])
                    if all("f1" in r for r in rows):  # for information: F1's own optimum
                        entry["tuning"]["best_f1_on_tuning_tomogram"] = max(
                            rows, key=lambda r: r["f1"])
                if method == "supervised":
                    self.supervised_model(set_name)
                    entry["train"] = {k: v for k, v in load_json(
                        self.supervised_model(set_name, train=False)[:-3] + ".json").items()
                        if k not in ("history", "key", "noisy", "clean")}
                outputs = {seed: self.denoised(set_name, method, seed, best)
                           for seed in s["test"]}
            rows = []
            for seed in s["test"]:
                out, seconds = outputs[seed]
                row = {"seed": seed, "seconds": seconds}
                row.update(score(set_name, seed, out))
                rows.append(row)
            keys = [k for k in rows[0] if k not in ("seed",)]
            entry["per_tomogram"] = rows
            entry["mean"] = {k: float(np.mean([r[k] for r in rows])) for k in keys}
            entry["std"] = {k: float(np.std([r[k] for r in rows], ddof=1)) if len(rows) > 1
                            else 0.0 for k in keys}
            entries[method] = entry
            main = ("F1 %.3f" % entry["mean"]["f1"]) if set_name == "picking" else \
                ("SSIM %.4f PSNR %.2f" % (entry["mean"]["ssim_gm"], entry["mean"]["psnr_gm"]))
            log("   %s: %s" % (method, main))
            # Save after each method, so an interrupted run keeps what it finished.
            self._write_set(set_name, entries)
        return self._write_set(set_name, entries)

    def _write_set(self, set_name, done):
        """Merge this invocation's methods into the results file on disk (read just
        before writing, so two invocations on different methods can run at once)."""
        s = SETS[set_name]
        path = os.path.join(self.results, set_name + ".json")
        entries = dict((load_json(path, {}) or {}).get("methods", {}))
        entries.update(done)
        data = {
            "benchmark": "DUAL paper Table %d on phantoms" % (1 if set_name == "denoise" else 2),
            "updated": self.date, "last_command": self.command, "machine": machine(),
            "set": {"name": set_name, "noisy_seeds": s["noisy"], "clean_seeds": s["clean"],
                    "tuning_seed": s["tune"], "test_seeds": s["test"],
                    "phantom": self.phantom_params(set_name, 0)},
            "std": "sample standard deviation (ddof=1) over the test tomograms",
            "methods": {m: entries[m] for m in ORDER if m in entries},
        }
        data["set"]["phantom"].pop("seed")
        if set_name == "picking":
            data["picking_protocol"] = dict(PICK)
        else:
            data["metrics"] = ("PSNR/SSIM (dual_engine.metrics: both volumes standardised, "
                               "R = max-min of the reference, SSIM window 7^3) against the "
                               "grand model (gm) and the noise-free reconstruction (nf)")
        save_json(os.path.join(self.results, set_name + ".json"), data)
        return data

    # ---------------------------------------------------------------- main
    def run(self):
        self.command = "python bench/run_benchmark.py " + " ".join(self.args.argv)
        self.date = datetime.datetime.now().isoformat(timespec="seconds")
        import torch
        torch.set_num_threads(self.args.threads)
        methods = [m for m in ORDER if m in self.args.methods]
        if self.args.no_dual and "dual" in methods:
            methods.remove("dual")
        for set_name in self.args.sets:
            self.run_set(set_name, methods)
        write_tables(self.results)


class PhantomStudy:
    """Base of the other bench scripts (run_wedge.py, run_realism.py): the benchmark's
    phantoms of one set, a work folder of their own, raw volume access."""

    def __init__(self, args, set_name, work_name):
        self.args, self.set_name = args, set_name
        self.bench = Bench(parse(["--work", args.work, "--results", args.results,
                                  "--threads", str(args.threads)]))
        self.work = os.path.join(os.path.abspath(args.work), work_name)
        os.makedirs(self.work, exist_ok=True)

    def path(self, seed, name):
        return os.path.join(self.bench.phantom_dir(self.set_name, seed), name + ".mrc")

    def load(self, seed, name):
        """A phantom's volume as float32, as written (not standardised)."""
        return np.array(read_mrc(self.path(seed, name))[0], dtype=np.float32)


# ------------------------------------------------------------------ tables
def _fmt(entry, key, digits):
    if key not in entry.get("mean", {}):
        return "n/a"
    return "%.*f ± %.*f" % (digits, entry["mean"][key], digits, entry["std"][key])


def _params(entry):
    p = entry.get("params", {})
    if "dual_config" in p:
        c = p["dual_config"]
        chosen = entry.get("tuning", {}).get("chosen_iteration", c["iterations"])
        return ("iteration %s chosen on the tuning tomogram (of %s trained), batch %s, "
                "U-Net width %s, depth %s, noise code K=%s" % (
                    chosen, c["iterations"], c["batch_size"], c["unet_width"],
                    c["unet_depth"], c["code_size"]))
    text = ", ".join("%s=%s" % (k, v) for k, v in p.items())
    edge = entry.get("tuning", {}).get("best_on_grid_edge")
    if edge:
        text += " (on the grid edge: %s)" % ", ".join(edge)
    if entry.get("train"):
        t = entry["train"]
        text = (text + ", " if text else "") + "%d iterations in %.0f s (budget %g min)" % (
            t["iterations"], t["seconds"], t["minutes_budget"])
    return text or "-"


def _grid_table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [line, "| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths)) + " |",
           line.replace("-", "=")]
    for r in rows:
        out.append("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |")
        out.append(line)
    return out


def write_tables(results_dir):
    denoise = load_json(os.path.join(results_dir, "denoise.json"))
    picking = load_json(os.path.join(results_dir, "picking.json"))
    lines = ["DUAL benchmark on phantom data", "=" * 30, ""]
    lines.append("Generated by ``python bench/run_benchmark.py`` (see bench/README.md). "
                 "Mean ± sample std over the test tomograms. Times are wall seconds with "
                 "one thread on a shared 2-core machine. The results may be assembled by "
                 "several incremental runs: each method's own command and date are in "
                 "denoise.json / picking.json.")
    lines.append("")
    for data in (denoise, picking):
        if not data:
            continue
        m = data["machine"]
        lines.append("- %s: last command ``%s`` on %s; machine: %s cores (%s), torch %s, "
                     "%s torch thread(s)" % (data["set"]["name"], data["last_command"],
                                             data["updated"], m["cores"], m["cpu"],
                                             m["torch"], m["torch_threads"]))
    lines.append("")
    if denoise:
        s = denoise["set"]
        lines += ["Table 1: denoising (PSNR dB / SSIM)", "-" * 35, "",
                  "Noisy domain: reconstructions of seeds %s; clean domain: grand models of "
                  "seeds %s; parameters tuned on seed %s; test tomograms: seeds %s "
                  "(%s voxels at %g A)." % (s["noisy_seeds"], s["clean_seeds"],
                                            s["tuning_seed"], s["test_seeds"],
                                            "x".join(map(str, s["phantom"]["shape"])),
                                            s["phantom"]["voxel_size"]), ""]
        header = ["Method", "PSNR vs GM", "SSIM vs GM", "PSNR vs noise-free",
                  "SSIM vs noise-free", "s / tomogram"]
        for kind, title in (("method", None), ("reference", "Reference ceilings")):
            rows = []
            for name, e in denoise["methods"].items():
                if e["kind"] != kind:
                    continue
                rows.append([e["label"], _fmt(e, "psnr_gm", 2), _fmt(e, "ssim_gm", 3),
                             _fmt(e, "psnr_nf", 2), _fmt(e, "ssim_nf", 3),
                             "%.1f" % e["mean"]["seconds"]])
            if rows:
                if title:
                    lines += ["", title + " (not competitors):", ""]
                lines += _grid_table(header, rows)
        lines.append("")
    if picking:
        s = picking["set"]
        p = picking["picking_protocol"]
        lines += ["Table 2: DoG picking on the ribosome-like set", "-" * 45, "",
                  "Ribosomes only, %s requested per %s-voxel tomogram, contrast %s V; "
                  "DoG diameter %g A, NMS %g A, margin %g A, top-N = %g x true count, a hit "
                  "within %g A (one-to-one). Noisy domain seeds %s, clean domain seeds %s, "
                  "tuning seed %s, test seeds %s."
                  % (s["phantom"].get("n_particles"), "x".join(map(str, s["phantom"]["shape"])),
                     s["phantom"].get("contrast_volts"), p["diameter_angstrom"],
                     p["min_distance_angstrom"], p["margin_angstrom"], p["top_factor"],
                     p["match_distance_angstrom"], s["noisy_seeds"], s["clean_seeds"],
                     s["tuning_seed"], s["test_seeds"]), ""]
        header = ["Method", "Precision", "Recall", "F1", "SSIM vs GM", "s / tomogram"]
        for kind, title in (("method", None), ("reference", "Reference ceilings")):
            rows = [[e["label"], _fmt(e, "precision", 3), _fmt(e, "recall", 3),
                     _fmt(e, "f1", 3), _fmt(e, "ssim_gm", 3), "%.1f" % e["mean"]["seconds"]]
                    for e in picking["methods"].values() if e["kind"] == kind]
            if rows:
                if title:
                    lines += ["", title + " (not competitors):", ""]
                lines += _grid_table(header, rows)
        lines.append("")
    timing = []
    for data in (denoise, picking):
        if data and "dual" in data["methods"]:
            e = data["methods"]["dual"]
            timing.append("- DUAL on the %s set: %.0f s wall to the chosen iteration %s "
                          "(%.0f s for all %s iterations, %s thread(s); training only, "
                          "without scoring the snapshots), inference %.1f ± %.1f s per tomogram."
                          % (data["set"]["name"], e.get("seconds_to_chosen", 0),
                             e.get("tuning", {}).get("chosen_iteration"),
                             e["train_wall_seconds"],
                             e["params"]["dual_config"]["iterations"], e["train_threads"],
                             e["mean"]["seconds"], e["std"]["seconds"]))
    if timing:
        lines += ["DUAL timings", "-" * 12, ""] + timing + [""]
    lines += ["Parameters (tuned on the tuning tomogram by maximum SSIM vs grand model)",
              "-" * 72, ""]
    for data in (denoise, picking):
        if not data:
            continue
        lines.append("%s set:" % data["set"]["name"])
        lines.append("")
        for name, e in data["methods"].items():
            lines.append("- %s: %s" % (e["label"], _params(e)))
        lines.append("")
    lines += _extra_tables(results_dir)
    path = os.path.join(results_dir, "tables.rst")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def _mean_std(entry, key, digits):
    return "%.*f ± %.*f" % (digits, entry["mean"][key], digits, entry["std"][key])


def _extra_tables(results_dir):
    """The sections of run_wedge.py, run_realism.py and run_speed.py, when they ran."""
    lines = []
    wedge = load_json(os.path.join(results_dir, "wedge.json")) or {}
    for volume, data in wedge.get("conditions", {}).items():
        title = "Table 3: missing-wedge compensation (%s)" % volume
        lines += [title, "-" * len(title), "",
                  "``%s`` on %s. Tilts %s..%s about Y; DUAL trained on the %s of "
                  "seeds %s only, iteration chosen on seed %s, scores on seeds %s. Table 3 "
                  "protocol: compensate, remove a second wedge (beam along X), compensate "
                  "again, score the restored coefficients against the removed ones. Ground "
                  "truth: the first compensation against the grand model inside the original "
                  "missing cone (%s cycles/voxel, without the k_z axis)." % (
                      data["command"], data["date"], data["tilt_range"][0],
                      data["tilt_range"][1], volume, data["train_seeds"], data["tuning_seed"],
                      data["test_seeds"], "-".join(map(str, data[
                          "ground_truth_band_cycles_per_voxel"]))), ""]
        header = ["Method", "Table 3 PSNR", "Table 3 SSIM", "Table 3 Fourier corr.",
                  "GM cone Fourier corr.", "GM cone PSNR", "GM cone SSIM", "s / tomogram"]
        rows = [[e["label"], _mean_std(e, "t3_psnr", 2), _mean_std(e, "t3_ssim", 3),
                 _mean_std(e, "t3_fourier_correlation", 3),
                 _mean_std(e, "gt_fourier_correlation", 3), _mean_std(e, "gt_psnr", 2),
                 _mean_std(e, "gt_ssim", 3), "%.1f" % e["mean"]["seconds"]]
                for e in data["methods"].values()]
        lines += _grid_table(header, rows) + [""]
        for e in data["methods"].values():
            if "training" in e:
                t = e["training"]
                lines.append("- %s: iteration %d chosen (of %d), %.0f s of training to it "
                             "(%s thread(s))." % (e["label"], t["chosen_iteration"],
                                                  e["config"]["iterations"],
                                                  t["seconds_to_chosen"], t["threads"]))
            if "params" in e:
                lines.append("- %s: %s" % (e["label"], ", ".join(
                    "%s=%s" % kv for kv in e["params"].items())))
        lines.append("")
    data = load_json(os.path.join(results_dir, "realism.json"))
    if data:
        lines += ["Simulation realism", "-" * 18, "",
                  "``%s`` on %s. Real tomograms: picking-set seeds %s (SNR %.3f); each "
                  "simulator turns the same seeds' grand models into tomograms. Classifier "
                  "trained on seeds %s, ROC AUC on seeds %s (0.5 = indistinguishable). Real "
                  "wedge power ratio (cone / rest): %.3f." % (
                      data["command"], data["date"], data["real_seeds"], data["real_snr"],
                      data["classifier_train_seeds"], data["classifier_test_seeds"],
                      data["real_wedge_power_ratio"]), ""]
        steps = list(next(iter(data["simulators"].values()))["classifier_auc"])
        header = ["Simulator", "log10 spectrum RMS diff.", "Wedge power ratio",
                  "|log10 ratio / real|"] + ["AUC, %s steps" % n for n in steps]
        rows = [[e["label"], "%.3f ± %.3f" % tuple(e["spectrum_rms_log10"].values()),
                 "%.3f ± %.3f" % tuple(e["wedge_power_ratio"].values()),
                 "%.3f ± %.3f" % tuple(e["wedge_abs_log10_ratio_to_real"].values())]
                + ["%.3f" % e["classifier_auc"][n] for n in steps]
                for e in data["simulators"].values()]
        lines += _grid_table(header, rows) + [""]
    data = load_json(os.path.join(results_dir, "speed.json"))
    if data:
        lines += ["Denoising speed, 200x512x512 voxels", "-" * 35, "",
                  "``%s`` on %s, %d torch thread(s), each run a fresh process (wall time, "
                  "peak resident memory)." % (data["command"], data["date"], data["threads"]),
                  ""]
        header = ["Run", "Wall seconds", "Peak memory (GB)", "Topaz time / this time"]
        rows = []
        for name, runs in data["runs"].items():
            ratio = data["ratio_topaz_over_dual"].get(name, 1.0)
            bound = ">= " if data.get("ratio_is_lower_bound") else ""
            rows.append([name, ", ".join(("%.1f" % r["seconds"]) + (
                "" if r.get("finished", True) else " (stopped)") for r in runs),
                ", ".join("%.2f" % r["peak_gb"] for r in runs), bound + "%.2f" % ratio])
        lines += _grid_table(header, rows) + [""]
        if data.get("note"):
            lines += [data["note"], ""]
    return lines


# ------------------------------------------------------------------ CLI
def add_common_arguments(ap, threads):
    """Options every bench script shares."""
    ap.add_argument("--threads", type=int, default=threads,
                    help="torch threads (default %d)" % threads)
    ap.add_argument("--work", default=os.path.join(HERE, "work"))
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    ap.add_argument("--force", action="store_true", help="recompute cached intermediates")


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", choices=ORDER, default=None,
                    help="methods to run (default: all; DUAL unless --no-dual)")
    ap.add_argument("--no-dual", action="store_true", help="skip DUAL")
    ap.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    ap.add_argument("--dual-config", default=os.path.join(HERE, "dual_config.json"),
                    help="JSON of DualConfig fields for DUAL (default bench/dual_config.json)")
    ap.add_argument("--dual-iterations", type=int, default=None,
                    help="override the config's iterations (the most DUAL may train)")
    ap.add_argument("--dual-select-every", type=int, default=100,
                    help="score a DUAL snapshot on the tuning tomogram every N iterations "
                         "and keep the best (default 100)")
    ap.add_argument("--supervised-minutes", type=float, default=10.0,
                    help="wall-time budget of the supervised U-Net, per set (default 10)")
    ap.add_argument("--pick-contrast", type=float, default=None,
                    help="override the picking set's contrast_volts (default 0.15)")
    ap.add_argument("--shape", type=int, nargs=3, default=list(SHAPE), metavar=("Z", "Y", "X"))
    add_common_arguments(ap, threads=1)
    ap.add_argument("--tables-only", action="store_true",
                    help="only rewrite tables.rst from the results JSON files")
    args = ap.parse_args(argv)
    args.argv = list(argv)
    if args.methods is None:
        args.methods = list(ORDER)
    return args


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.tables_only:
        print(write_tables(os.path.abspath(args.results)))
        return
    Bench(args).run()


if __name__ == "__main__":
    main()
