"""The benchmark's methods: how each is tuned, trained and run on a set of the study
(study.Bench), every step cached in the work folder. Baselines are tuned by grid search
on the set's tuning tomogram, DUAL's iteration count by scoring training snapshots on it,
the supervised ceiling on the noisy domain's tomograms paired with their grand models.
"""

import datetime
import itertools
import json
import os
import shutil
import time

import numpy as np

import baselines
from dual_engine import metrics
from dual_engine.io import read_mrc, standardize, write_mrc
from study import SETS, VOXEL_SIZE, canonical, load_json, log, save_json

DUAL_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dual_config.json")

# kind: "method" (competitor) or "reference" (ceiling, reported beside, not counted).
# grid: parameter name -> values (tuned by maximum SSIM vs the grand model);
# region: "full" tuning tomogram or its central "crop" (64 x 128 x 128) for slow methods.
METHODS = {
    "none": {"label": "None", "kind": "method", "grid": {}},
    "gaussian": {
        "label": "Gaussian smoothing",
        "kind": "method",
        "region": "full",
        "grid": {"sigma": [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]},
    },
    "nad": {
        "label": "NAD (Perona-Malik)",
        "kind": "method",
        "region": "full",
        "grid": {"kappa": [0.5, 1.0, 2.0, 4.0, 8.0], "iterations": [5, 10, 20, 40, 80, 160]},
    },
    "nlm": {
        "label": "NLM",
        "kind": "method",
        "region": "crop",
        "grid": {"h": [0.6, 1.0, 1.6, 2.4, 3.2], "patch_size": [5, 7], "patch_distance": [3, 5]},
    },
    "bm4d": {
        "label": "BM4D",
        "kind": "method",
        "region": "crop",
        "grid": {"sigma": [1.0, 2.0, 3.0, 4.5, 6.5]},
    },
    "topaz10a": {
        "label": "Topaz-3D unet-3d-10a",
        "kind": "method",
        "region": "crop",
        "fixed": {"model": "unet-3d-10a"},
        "grid": {"polarity": ["dark", "bright"]},
    },
    "topaz20a": {
        "label": "Topaz-3D unet-3d-20a",
        "kind": "method",
        "region": "crop",
        "fixed": {"model": "unet-3d-20a"},
        "grid": {"polarity": ["dark", "bright"]},
    },
    "dual": {"label": "DUAL", "kind": "method", "grid": {}},
    "noisefree_gaussian": {
        "label": "Noise-free reconstruction + best Gaussian",
        "kind": "reference",
        "region": "full",
        "grid": {"sigma": [0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0]},
    },
    "supervised": {"label": "Supervised 3-D U-Net (paired)", "kind": "reference", "grid": {}},
}
ORDER = list(METHODS)


def crop(volume):
    """Central tuning region of a volume: full z, the central half in y and x."""
    _, ny, nx = volume.shape
    return volume[:, ny // 4 : ny // 4 + ny // 2, nx // 4 : nx // 4 + nx // 2]


def dual_config(path=DUAL_CONFIG, iterations=None):
    """The DualConfig of the bench's DUAL runs: the fields in the JSON file `path` (keys
    starting with "_" are comments; no file: engine defaults), iterations overridden."""
    from dual_engine.model import DualConfig

    values = load_json(path, {}) if path else {}
    values = {k: v for k, v in values.items() if not k.startswith("_")}
    if iterations is not None:
        values["iterations"] = iterations
    return DualConfig.from_dict(values)


def train_with_snapshots(
    noisy,
    clean,
    outdir,
    cfg,
    step,
    threads,
    key,
    score,
    criterion,
    force=False,
    label="DUAL",
    score_key=None,
    train=None,
):
    """Train DUAL (dual_engine.train.train, or `train`) to cfg.iterations keeping a
    snapshot model every `step` iterations (the engine's snapshot_every: one run, whose
    learning-rate schedule is the full run's), score each snapshot with `score(path)` ->
    dict, and choose the snapshot with the highest `criterion`.

    The record (outdir/bench_training.json) is saved after each score; an interrupted
    training resumes from its checkpoint; a record with another `key` (config, data)
    starts over; one with another `score_key` (how snapshots are scored) re-scores the
    snapshots it has. Returns it, with "chosen_iteration", "train_wall_seconds" and
    "seconds_to_chosen" (the training log's time at the chosen iteration); the chosen
    model is outdir/snapshots/iterNNNNN.pt.
    """
    from dual_engine.contract import MODEL_FILE, TRAINING_LOG

    if train is None:
        from dual_engine.train import train

    record_path = os.path.join(outdir, "bench_training.json")
    record = load_json(record_path)
    if not (record and record.get("key") == key) or force:
        if os.path.isdir(outdir):
            shutil.rmtree(outdir)
        record = {"key": key, "threads": threads, "snapshots": []}
    os.makedirs(outdir, exist_ok=True)
    if "train_wall_seconds" not in record:
        log("training %s: %d iterations, %d thread(s)" % (label, cfg.iterations, threads))
        run_cfg = cfg.from_dict(dict(cfg.to_dict(), snapshot_every=step))
        t0 = time.perf_counter()
        train(noisy, clean, outdir, run_cfg, resume=True, device="cpu", threads=threads)
        record["train_wall_seconds"] = round(time.perf_counter() - t0, 1)
        if cfg.iterations % step:  # the last iteration is no multiple of step
            shutil.copyfile(os.path.join(outdir, MODEL_FILE), snapshot_path(outdir, cfg.iterations))
        save_json(record_path, record)
    if record.get("score_key") != score_key:
        record["snapshots"] = []
        record["score_key"] = score_key
    with open(os.path.join(outdir, TRAINING_LOG)) as f:
        elapsed = {r["iteration"]: r["seconds"] for r in map(json.loads, f)}
    done = {r["iteration"] for r in record["snapshots"]}
    targets = list(range(step, cfg.iterations + 1, step))
    if not targets or targets[-1] != cfg.iterations:
        targets.append(cfg.iterations)
    for target in targets:
        if target in done:
            continue
        row = {"iteration": target, "train_seconds": elapsed.get(target)}
        row.update(score(snapshot_path(outdir, target)))
        record["snapshots"].append(row)
        record["snapshots"].sort(key=lambda r: r["iteration"])
        save_json(record_path, record)
        log(
            "  iteration %d: %s"
            % (
                target,
                ", ".join(
                    "%s %.4f" % (k, v)
                    for k, v in row.items()
                    if k not in ("iteration", "train_seconds") and isinstance(v, (int, float))
                ),
            )
        )
    rows = [r for r in record["snapshots"] if r["iteration"] in targets]
    best = max(rows, key=lambda r: r[criterion])
    record["chosen_iteration"] = best["iteration"]
    record["seconds_to_chosen"] = best["train_seconds"]
    save_json(record_path, record)
    log(
        "  %s: chosen iteration %d (%s %.4f)"
        % (label, best["iteration"], criterion, best[criterion])
    )
    return record


def snapshot_path(outdir, iteration):
    from dual_engine.contract import SNAPSHOT_DIR, snapshot_name

    return os.path.join(outdir, SNAPSHOT_DIR, snapshot_name(iteration))


class Methods:
    """The methods run on the sets of `bench` (a study.Bench): tuning, training and the
    outputs on the test tomograms are cached in bench.work; bench.force redoes them.

    dual_cfg: the DualConfig of DUAL (default: dual_config()), whose U-Net width, depth
    and subvolume size the supervised ceiling shares; threads: torch threads;
    select_every: DUAL scores a snapshot every so many iterations; supervised_minutes:
    the supervised ceiling's wall-time budget per set.
    """

    def __init__(self, bench, dual_cfg=None, threads=1, select_every=100, supervised_minutes=10.0):
        self.bench = bench
        self.dual_cfg = dual_config() if dual_cfg is None else dual_cfg
        self.threads = threads
        self.select_every = select_every
        self.supervised_minutes = supervised_minutes

    # ---------------------------------------------------------------- baselines
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
        bench = self.bench
        seed = SETS[set_name]["tune"]
        path = os.path.join(bench.work, "tuning", set_name, method + ".json")
        key = canonical(
            {
                "grid": spec["grid"],
                "fixed": spec.get("fixed", {}),
                "region": spec["region"],
                "phantom": bench.phantom_params(set_name, seed),
            }
        )
        cached = load_json(path)
        if cached and cached.get("key") == key and not bench.force:
            return cached["best"], cached
        noisy = bench.volume(set_name, seed, "reconstruction")
        gm = bench.volume(set_name, seed, "grandmodel")
        nf = bench.volume(set_name, seed, "reconstruction_noisefree")
        truth = bench.truth(set_name, seed) if set_name == "picking" else None
        if spec["region"] == "crop":
            _, ny, nx = noisy.shape
            noisy, gm, nf = (standardize(crop(v)) for v in (noisy, gm, nf))
            if truth is not None:  # particle centres inside the crop, in its voxels
                truth = truth - np.array([nx // 4, ny // 4, 0])
                inside = np.all((truth >= 0) & (truth <= np.array(noisy.shape[::-1]) - 1), axis=1)
                truth = truth[inside]
        names = list(spec["grid"])
        rows = []
        log(
            "tuning %s/%s on seed %d (%s): %d settings"
            % (
                set_name,
                method,
                seed,
                spec["region"],
                int(np.prod([len(v) for v in spec["grid"].values()])),
            )
        )
        for values in itertools.product(*(spec["grid"][n] for n in names)):
            params = dict(zip(names, values))
            t0 = time.perf_counter()
            out = self.apply(method, noisy, params, set_name, noisefree=nf)
            seconds = time.perf_counter() - t0
            row = {
                "params": params,
                "ssim_gm": metrics.ssim(gm, out),
                "psnr_gm": metrics.psnr(gm, out),
                "seconds": round(seconds, 2),
            }
            if truth is not None:  # recorded, not used for the choice (SSIM is)
                row["f1"] = bench.pick_scores(out, truth)["f1"]
            rows.append(row)
            log(
                "  %s  SSIM %.4f  PSNR %.2f%s  (%.1f s)"
                % (
                    params,
                    row["ssim_gm"],
                    row["psnr_gm"],
                    ("  F1 %.3f" % row["f1"]) if "f1" in row else "",
                    seconds,
                )
            )
        best = max(rows, key=lambda r: r["ssim_gm"])["params"]
        edge = [
            n
            for n in names
            if len(spec["grid"][n]) > 1
            and best[n] in (spec["grid"][n][0], spec["grid"][n][-1])
            and not isinstance(best[n], str)
        ]
        result = {
            "key": key,
            "tomogram_seed": seed,
            "region": spec["region"],
            "criterion": "max SSIM vs grand model",
            "best": best,
            "rows": rows,
            "best_on_grid_edge": edge,
        }
        save_json(path, result)
        log("  -> %s%s" % (best, ("  (on the grid edge: %s)" % edge) if edge else ""))
        return best, result

    def output_path(self, set_name, method, seed):
        return os.path.join(self.bench.work, "outputs", set_name, method, "seed%03d.mrc" % seed)

    def denoised(self, set_name, method, seed, params):
        """The method's output on one test tomogram (cached with its parameters)."""
        bench = self.bench
        path = self.output_path(set_name, method, seed)
        meta_path = path[:-4] + ".json"
        key = canonical(
            {
                "params": params,
                "fixed": METHODS[method].get("fixed", {}),
                "phantom": bench.phantom_params(set_name, seed),
                "model": self._model_stamp(set_name, method),
            }
        )
        meta = load_json(meta_path)
        if meta and meta.get("key") == key and os.path.exists(path) and not bench.force:
            return standardize(np.array(read_mrc(path)[0])), meta["seconds"]
        noisy = bench.volume(set_name, seed, "reconstruction")
        nf = (
            bench.volume(set_name, seed, "reconstruction_noisefree")
            if method == "noisefree_gaussian"
            else None
        )
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
        bench = self.bench
        path = os.path.join(bench.work, "supervised", set_name, "unet.pt")
        if not train:
            return path
        s = SETS[set_name]
        noisy = [
            os.path.join(bench.phantom_dir(set_name, k), "reconstruction.mrc") for k in s["noisy"]
        ]
        clean = [
            os.path.join(bench.phantom_dir(set_name, k), "grandmodel.mrc") for k in s["noisy"]
        ]  # the SAME phantoms: paired
        key = canonical(
            {
                "minutes": self.supervised_minutes,
                "width": self.dual_cfg.unet_width,
                "depth": self.dual_cfg.unet_depth,
                "size": self.dual_cfg.subvolume_size,
                "phantoms": [bench.phantom_params(set_name, k) for k in s["noisy"]],
            }
        )
        meta_path = path[:-3] + ".json"
        meta = load_json(meta_path)
        if meta and meta.get("key") == key and os.path.exists(path) and not bench.force:
            return path
        log(
            "training the supervised U-Net for %s (%g min, width %d, depth %d)"
            % (
                set_name,
                self.supervised_minutes,
                self.dual_cfg.unet_width,
                self.dual_cfg.unet_depth,
            )
        )
        summary = baselines.train_supervised(
            noisy,
            clean,
            path,
            minutes=self.supervised_minutes,
            width=self.dual_cfg.unet_width,
            depth=self.dual_cfg.unet_depth,
            size=self.dual_cfg.subvolume_size,
            voxel_size=VOXEL_SIZE,
            log=log,
        )
        summary["key"] = key
        save_json(meta_path, summary)
        return path

    # ---------------------------------------------------------------- DUAL
    def run_dual(self, set_name):
        """Train DUAL on the set's unpaired split, choose its iteration count on the tuning
        tomogram, and denoise the test tomograms with the chosen snapshot.

        Noisy domain: reconstructions of the set's noisy seeds; clean domain: grand models
        of its (different) clean seeds. Training (dual_engine.train.train, config
        self.dual_cfg) runs in chunks of self.select_every iterations, each resuming from
        the previous chunk's checkpoint (bit-identical to one uninterrupted run); after
        each chunk the model denoises the tuning tomogram and is scored like the
        baselines' parameters (maximum SSIM vs the grand model). The iteration count is
        DUAL's one tuned parameter; the test tomograms never see it.
        Returns {seed: (volume, inference seconds)} and the training record.
        """
        from dual_engine.infer import denoise

        bench = self.bench
        s = SETS[set_name]
        cfg = self.dual_cfg
        step = self.select_every
        outdir = os.path.join(bench.work, "dual", set_name)
        noisy = [
            os.path.join(bench.phantom_dir(set_name, k), "reconstruction.mrc") for k in s["noisy"]
        ]
        clean = [os.path.join(bench.phantom_dir(set_name, k), "grandmodel.mrc") for k in s["clean"]]
        tune_seed = s["tune"]
        tune_path = os.path.join(bench.phantom_dir(set_name, tune_seed), "reconstruction.mrc")
        gm = bench.volume(set_name, tune_seed, "grandmodel")
        key = canonical(
            {
                "config": cfg.to_dict(),
                "select_every": step,
                "noisy": s["noisy"],
                "clean": s["clean"],
                "tune": tune_seed,
                "phantoms": [
                    bench.phantom_params(set_name, k) for k in s["noisy"] + s["clean"] + [tune_seed]
                ],
            }
        )

        def score(snapshot):
            tuned = os.path.join(outdir, "tune.mrc")
            denoise(snapshot, tune_path, tuned, device="cpu", threads=self.threads)
            out = standardize(np.array(read_mrc(tuned)[0]))
            return {"ssim_gm": metrics.ssim(gm, out), "psnr_gm": metrics.psnr(gm, out)}

        record = train_with_snapshots(
            noisy,
            clean,
            outdir,
            cfg,
            step,
            self.threads,
            key,
            score,
            "ssim_gm",
            bench.force,
            "DUAL for %s" % set_name,
        )
        chosen = record["chosen_iteration"]
        model_path = snapshot_path(outdir, chosen)
        outputs = {}
        for seed in s["test"]:
            path = self.output_path(set_name, "dual", seed)
            meta_path = path[:-4] + ".json"
            okey = canonical(
                {"model": key, "iteration": chosen, "phantom": bench.phantom_params(set_name, seed)}
            )
            meta = load_json(meta_path)
            if not (meta and meta.get("key") == okey and os.path.exists(path) and not bench.force):
                t0 = time.perf_counter()
                denoise(
                    model_path,
                    os.path.join(bench.phantom_dir(set_name, seed), "reconstruction.mrc"),
                    path,
                    device="cpu",
                    threads=self.threads,
                )
                meta = {"key": okey, "seconds": round(time.perf_counter() - t0, 2)}
                save_json(meta_path, meta)
                log("  %s/dual seed %d: %.1f s" % (set_name, seed, meta["seconds"]))
            outputs[seed] = (standardize(np.array(read_mrc(path)[0])), meta["seconds"])
        return outputs, record

    # ---------------------------------------------------------------- one method
    def run_method(self, set_name, method, entry):
        """Tune or train `method` for the set and run it on the test tomograms: adds its
        parameters and tuning (and training) record to `entry`; returns
        {seed: (standardised output, seconds)}."""
        s = SETS[set_name]
        spec = METHODS[method]
        if method == "dual":
            outputs, record = self.run_dual(set_name)
            entry["params"] = {"dual_config": self.dual_cfg.to_dict()}
            entry["train_wall_seconds"] = record["train_wall_seconds"]
            entry["seconds_to_chosen"] = record["seconds_to_chosen"]
            entry["train_threads"] = record["threads"]
            entry["tuning"] = {
                "tomogram_seed": s["tune"],
                "criterion": "max SSIM vs grand model over training snapshots",
                "chosen_iteration": record["chosen_iteration"],
                "snapshots": record["snapshots"],
            }
            return outputs
        best, tuning = self.tune(set_name, method)
        entry["params"] = dict(spec.get("fixed", {}), **best)
        if tuning:
            entry["tuning"] = {
                k: tuning[k] for k in ("tomogram_seed", "region", "criterion", "best_on_grid_edge")
            }
            entry["tuning"]["grid"] = spec["grid"]
            rows = tuning["rows"]
            entry["tuning"]["chosen"] = max(rows, key=lambda r: r["ssim_gm"])
            if all("f1" in r for r in rows):  # for information: F1's own optimum
                entry["tuning"]["best_f1_on_tuning_tomogram"] = max(rows, key=lambda r: r["f1"])
        if method == "supervised":
            self.supervised_model(set_name)
            entry["train"] = {
                k: v
                for k, v in load_json(
                    self.supervised_model(set_name, train=False)[:-3] + ".json"
                ).items()
                if k not in ("history", "key", "noisy", "clean")
            }
        return {seed: self.denoised(set_name, method, seed, best) for seed in s["test"]}

    # ---------------------------------------------------------------- the benchmark
    def run_set(self, set_name, methods, command, date):
        """Run `methods` on one set, score them on its test tomograms and merge them into
        its results file (after each method, so an interrupted run keeps what it
        finished). Returns the results file's content."""
        bench = self.bench
        bench.all_phantoms(set_name)
        entries = {}  # the methods run by THIS invocation
        for method in methods:
            spec = METHODS[method]
            log("== %s / %s" % (set_name, method))
            entry = {"label": spec["label"], "kind": spec["kind"], "command": command, "date": date}
            outputs = self.run_method(set_name, method, entry)
            rows = []
            for seed in SETS[set_name]["test"]:
                out, seconds = outputs[seed]
                row = {"seed": seed, "seconds": seconds}
                row.update(bench.score(set_name, seed, out))
                rows.append(row)
            keys = [k for k in rows[0] if k != "seed"]
            entry["per_tomogram"] = rows
            entry["mean"] = {k: float(np.mean([r[k] for r in rows])) for k in keys}
            entry["std"] = {
                k: float(np.std([r[k] for r in rows], ddof=1)) if len(rows) > 1 else 0.0
                for k in keys
            }
            entries[method] = entry
            headline = (
                ("F1 %.3f" % entry["mean"]["f1"])
                if set_name == "picking"
                else ("SSIM %.4f PSNR %.2f" % (entry["mean"]["ssim_gm"], entry["mean"]["psnr_gm"]))
            )
            log("   %s: %s" % (method, headline))
            bench.write_set(set_name, entries, ORDER, command, date)
        return bench.write_set(set_name, entries, ORDER, command, date)

    def run(self, sets, methods, command):
        """Run `methods` (run in ORDER's order) on `sets`; `command` is recorded with
        every result."""
        import torch

        torch.set_num_threads(self.threads)
        date = datetime.datetime.now().isoformat(timespec="seconds")
        methods = [m for m in ORDER if m in methods]
        for set_name in sets:
            self.run_set(set_name, methods, command, date)
