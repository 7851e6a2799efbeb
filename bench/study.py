"""The benchmark's study: the two phantom sets and their split (the paper's split of
SHREC 2021, see run_benchmark.py's docstring and bench/README.md), the DoG picking
protocol, the phantoms (made once and cached in the work folder), the scores of a method's
output on a test tomogram, and the results files bench/results/<set>.json.
"""

import json
import os
import platform
import re
import shutil
import time

import numpy as np

from dual_engine import metrics
from dual_engine.io import read_mrc, read_particle_locations, standardize

VOXEL_SIZE = 10.0
SHAPE = (64, 256, 256)

SETS = {
    "denoise": {
        "phantom": {},  # engine defaults: all classes, dose 100, contrast_volts 1.0
        "noisy": [0, 1, 2, 3],
        "clean": [4, 5, 6, 7],
        "tune": 9,
        "test": [8, 10, 11],
    },
    "picking": {
        "phantom": {"classes": ["ribosome"], "n_particles": 150, "contrast_volts": 0.15},
        "noisy": [100, 101, 102, 103],
        "clean": [104, 105, 106, 107],
        "tune": 109,
        "test": [110, 111, 112, 113, 114],
    },
    # run_picking.py's set: crowded ribosomes at the contrast where raw DoG tuned by F1
    # gives F1 ~0.56 and the noise-free reconstruction ~0.97 (calibrated, see its doc).
    "crowded": {
        "phantom": {"classes": ["ribosome"], "n_particles": 150, "contrast_volts": 0.13},
        "noisy": [300, 301, 302, 303],
        "clean": [304, 305, 306, 307],
        "tune": 309,
        "test": [310, 311, 312, 313, 314, 315],
    },
}
HALVES = ("reconstruction_even", "reconstruction_odd")  # of every phantom (Bench.phantom)
TABLE_SETS = ("denoise", "picking")  # run_benchmark.py's sets (Tables 1 and 2)

# DoG picking protocol (paper, Methods "Template-free particle picking", scaled).
PICK = {
    "class": "ribosome",
    "diameter_angstrom": 280.0,  # ~28 nm ribosome, as the paper; sigma1 = r/sqrt(3) = 8.1 nm
    "min_distance_angstrom": 200.0,  # NMS; paper 24 nm, see README: crowding
    "margin_angstrom": 70.0,  # quarter diameter: particles touching a face stay pickable
    "top_factor": 1.2,  # top-N = 1.2 x true count (paper: 500 picks, ~410 ribosomes)
    "match_distance_angstrom": 80.0,  # paper: within 8 nm of a true centre
    "polarity": "bright",  # every volume here is dense = bright
}


def engine_defaults():
    """How results name a model trained with the engine's defaults and simulating with
    the default noise model (they change: the iteration count says which)."""
    from dual_engine.contract import DEFAULT_NOISE_MODEL, DualConfig

    return "engine defaults, %d iterations, %s noise" % (
        DualConfig().iterations,
        DEFAULT_NOISE_MODEL,
    )


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
    """d as it reads back from JSON: the form every cache key is compared in."""
    return json.loads(json.dumps(d, sort_keys=True, default=_jsonable))


def cpu_flags():
    """The CPU's vector extensions: machines sold under one model name differ in them
    (this benchmark's ran 3.5x apart per training iteration, with and without AVX-512)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line for line in f if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return []
    return sorted(f for f in flags if f.startswith(("avx", "fma", "amx")))


def machine():
    cpu, family = platform.processor() or "", {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = (part.strip() for part in line.partition(":"))
                if key == "model name":
                    cpu = value
                elif key in ("cpu family", "model"):  # one "AMD EPYC" name, several chips
                    family.setdefault(key.replace(" ", "_"), value)
                if not line.strip():
                    break
    except OSError:
        pass
    import torch

    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "cpu_family_model": "%s/%s" % (family.get("cpu_family"), family.get("model")),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags": cpu_flags(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


# ------------------------------------------------------------------ the study
class Bench:
    """The sets' phantoms in a work folder (each remade only when its parameters change,
    or with force), their volumes and particle truths, the scores of a method's output
    on a test tomogram, and the results file of each set."""

    def __init__(self, work, results, shape=SHAPE, pick_contrast=None, force=False):
        self.work = os.path.abspath(work)
        self.results = os.path.abspath(results)
        self.shape = tuple(shape)
        self.pick_contrast = pick_contrast  # None: the picking set's own (0.15 V)
        self.force = force

    # ---------------------------------------------------------------- phantoms
    def phantom_params(self, set_name, seed):
        params = dict(
            shape=list(self.shape), voxel_size=VOXEL_SIZE, seed=int(seed), write_noise_free=True
        )
        params.update(SETS[set_name]["phantom"])
        if set_name == "picking" and self.pick_contrast is not None:
            params["contrast_volts"] = self.pick_contrast
        return params

    def phantom_dir(self, set_name, seed):
        return os.path.join(self.work, "phantoms", set_name, "seed%03d" % seed)

    def phantom(self, set_name, seed):
        """Make (or reuse) one phantom; returns its directory."""
        from dual_engine.synth.phantom import make_phantom

        outdir = self.phantom_dir(set_name, seed)
        params = self.phantom_params(set_name, seed)
        stamp = os.path.join(outdir, "bench_params.json")
        if (
            not self.force
            and os.path.exists(os.path.join(outdir, "phantom.json"))
            and os.path.exists(os.path.join(outdir, HALVES[1] + ".mrc"))
            and load_json(stamp) == canonical(params)
        ):
            return outdir
        if os.path.isdir(outdir):
            shutil.rmtree(outdir)
        log("phantom %s seed %d" % (set_name, seed))
        p = dict(params)
        # every phantom has its even/odd halves, which leave its other volumes as they
        # are (not a parameter: caches keyed on the parameters stay valid)
        make_phantom(outdir, shape=tuple(p.pop("shape")), write_halves=True, **p)
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
        return np.array(
            [p.xyz for p in read_particle_locations(path) if p.name == PICK["class"]]
        ).reshape(-1, 3)

    # ---------------------------------------------------------------- scoring
    def score_denoise(self, set_name, seed, out):
        gm = self.volume(set_name, seed, "grandmodel")
        nf = self.volume(set_name, seed, "reconstruction_noisefree")
        return {
            "psnr_gm": metrics.psnr(gm, out),
            "ssim_gm": metrics.ssim(gm, out),
            "psnr_nf": metrics.psnr(nf, out),
            "ssim_nf": metrics.ssim(nf, out),
        }

    @staticmethod
    def pick_scores(volume, truth):
        """The DoG protocol (PICK) on one volume, scored against truth centres (x, y, z)."""
        from dual_engine.pick import dog_pick

        top = max(1, int(round(PICK["top_factor"] * len(truth))))
        xyz, _ = dog_pick(
            volume,
            VOXEL_SIZE,
            PICK["diameter_angstrom"],
            top=top,
            min_distance=PICK["min_distance_angstrom"],
            margin=PICK["margin_angstrom"],
            polarity=PICK["polarity"],
        )
        r = metrics.match_picks(xyz, truth, PICK["match_distance_angstrom"] / VOXEL_SIZE)
        r["top"] = top
        return r

    def score_picks(self, set_name, seed, out):
        r = self.pick_scores(out, self.truth(set_name, seed))
        gm = self.volume(set_name, seed, "grandmodel")
        return {
            "precision": r["precision"],
            "recall": r["recall"],
            "f1": r["f1"],
            "tp": r["tp"],
            "n_picks": r["n_picks"],
            "n_truth": r["n_truth"],
            "top": r["top"],
            "ssim_gm": metrics.ssim(gm, out),
            "psnr_gm": metrics.psnr(gm, out),
        }

    def score(self, set_name, seed, out):
        """The set's scores of one output: PSNR/SSIM (denoise) or DoG picking (picking)."""
        if set_name == "denoise":
            return self.score_denoise(set_name, seed, out)
        return self.score_picks(set_name, seed, out)

    # ---------------------------------------------------------------- results
    def write_set(self, set_name, done, order, command, date):
        """Merge `done` (method -> entry, this invocation's) into the set's results file on
        disk, methods in `order` (read just before writing, so two invocations on
        different methods can run at once). Returns what it wrote."""
        s = SETS[set_name]
        path = os.path.join(self.results, set_name + ".json")
        entries = dict((load_json(path, {}) or {}).get("methods", {}))
        entries.update(done)
        data = {
            "benchmark": "DUAL paper Table %d on phantoms" % (1 if set_name == "denoise" else 2),
            "updated": date,
            "last_command": command,
            "machine": machine(),
            "set": {
                "name": set_name,
                "noisy_seeds": s["noisy"],
                "clean_seeds": s["clean"],
                "tuning_seed": s["tune"],
                "test_seeds": s["test"],
                "phantom": self.phantom_params(set_name, 0),
            },
            "std": "sample standard deviation (ddof=1) over the test tomograms",
            "methods": {m: entries[m] for m in order if m in entries},
        }
        data["set"]["phantom"].pop("seed")
        if set_name == "picking":
            data["picking_protocol"] = dict(PICK)
        else:
            data["metrics"] = (
                "PSNR/SSIM (dual_engine.metrics: both volumes standardised, "
                "R = max-min of the reference, SSIM window 7^3) against the "
                "grand model (gm) and the noise-free reconstruction (nf)"
            )
        save_json(path, data)
        return data


class PhantomStudy:
    """Base of the other bench scripts (run_wedge.py, run_realism.py): the benchmark's
    phantoms of one set, a work folder of their own, raw volume access."""

    def __init__(self, args, set_name, work_name):
        self.args, self.set_name = args, set_name
        self.bench = Bench(args.work, args.results)
        self.work = os.path.join(os.path.abspath(args.work), work_name)
        os.makedirs(self.work, exist_ok=True)

    def path(self, seed, name):
        return os.path.join(self.bench.phantom_dir(self.set_name, seed), name + ".mrc")

    def load(self, seed, name):
        """A phantom's volume as float32, as written (not standardised)."""
        return np.array(read_mrc(self.path(seed, name))[0], dtype=np.float32)

    def oracle_model(self, threads):
        """The engine-default model (seed 0) with its fitted noise spectra replaced by
        ones measured on paired data: the set's real training tomograms (reconstructions
        of its noisy seeds) each with its own grand model (spectral.fit_paired). No user
        has such pairs: its simulations are the best a linear image plus stationary
        Gaussian noise can be. Cached in <work>/models/<set>_oracle; returns (model
        path, its cache key)."""
        import torch
        from dual_engine import spectral
        from dual_engine.model import load_model

        base, base_key = self.default_denoiser(threads)
        outdir = os.path.join(self.bench.work, "models", "%s_oracle" % self.set_name)
        model = os.path.join(outdir, "model.pt")
        key = canonical({"base": base_key, "paired_fit": "fit_paired"})
        stamp = os.path.join(outdir, "bench_model.json")
        meta = load_json(stamp)
        if meta and meta["key"] == key and os.path.exists(model) and not self.args.force:
            return model, key
        log("fitting the linear-Gaussian oracle on the %s set's pairs" % self.set_name)
        noisy = SETS[self.set_name]["noisy"]
        config, state = load_model(base)
        state["spectra"] = spectral.fit_paired(
            [standardize(self.load(k, "reconstruction")) for k in noisy],
            [standardize(self.load(k, "grandmodel")) for k in noisy],
            config.tilt_axis,
        )
        os.makedirs(outdir, exist_ok=True)
        torch.save(state, model)
        save_json(stamp, {"key": key})
        return model, key

    def default_denoiser(self, threads, seed=0, changes=None):
        """A denoising model with the engine's defaults (DualConfig(), training seed
        `seed`, the settings in `changes`) trained on the set's split (reconstructions
        of its noisy seeds, grand models of its clean seeds), trained once and cached in
        <work>/models/<set>_engine_defaults[_<changes>][_seed<N>]; returns (model path,
        its cache key)."""
        from dual_engine import spectral
        from dual_engine.model import DualConfig
        from dual_engine.train import train

        s = SETS[self.set_name]
        changes = dict(changes or {})
        suffix = "".join("_%s%s" % item for item in sorted(changes.items()))
        suffix += "_seed%d" % seed if seed else ""
        folder = "%s_engine_defaults%s" % (self.set_name, re.sub(r"\W+", "-", suffix))
        outdir = os.path.join(self.bench.work, "models", folder)
        model = os.path.join(outdir, "model.pt")
        cfg = DualConfig(seed=seed, **changes)
        key = canonical(
            {
                "config": cfg.to_dict(),
                "phantoms": [
                    self.bench.phantom_params(self.set_name, k) for k in s["noisy"] + s["clean"]
                ],
                # the fitted noise model that training ends with (a model without it
                # cannot simulate with the engine's default noise model), its share of
                # structure measured on the noisy tomograms' even/odd halves
                "fitted_noise": {**spectral.SETTINGS, "share": "even/odd halves"},
            }
        )
        stamp = os.path.join(outdir, "bench_model.json")
        meta = load_json(stamp)
        if meta and meta["key"] == key and os.path.exists(model) and not self.args.force:
            return model, key
        # the same training with other fitted-noise settings: the finished run's
        # checkpoint only refits the noise model (train's resume at the last iteration)
        refit = (
            meta is not None
            and not self.args.force
            and {**meta["key"], "fitted_noise": None} == {**key, "fitted_noise": None}
            and os.path.exists(os.path.join(outdir, "checkpoint.pt"))
        )
        log(
            "%s the denoising model (%s) on the %s set"
            % ("refitting the noise model of" if refit else "training", folder, self.set_name)
        )
        t0 = time.perf_counter()
        train(
            [self.path(k, "reconstruction") for k in s["noisy"]],
            [self.path(k, "grandmodel") for k in s["clean"]],
            outdir,
            cfg,
            resume=refit,
            device="cpu",
            threads=threads,
            overwrite=not refit,
            given=set(),
            noisy_halves=[self.path(k, half) for k in s["noisy"] for half in HALVES],
        )
        save_json(stamp, {"key": key, "seconds": round(time.perf_counter() - t0, 1)})
        return model, key
