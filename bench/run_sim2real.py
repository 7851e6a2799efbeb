#!/usr/bin/env python
"""Sim-to-real: does a segmentation network trained only on simulated tomograms work on
real ones? The paper's Figs. 4-5 on phantoms, one command.

    python bench/run_sim2real.py --threads 2      # makes the phantoms it needs

Data: the denoising set of run_benchmark.py (every class, 64x256x256 voxels at 10 A).
The labelled maps are the grand models of its clean seeds 4-7 with their class masks;
each training set below turns the same maps into tomograms, with the same labels:
  dual     DUAL simulations: `simulate` (SIM_VARIANTS per map) with a denoising model of
           the engine's defaults trained on the set's own split (reconstructions of seeds
           0-3, grand models of 4-7, the reconstructions' even/odd halves for the
           noise model's share of structure: study.PhantomStudy.default_denoiser)
  physics  the physics simulator on the same maps with another acquisition than the real
           set's (OTHER_ACQUISITION: defocus, dose and tilt step changed), as a user
           simulating without knowing the microscope would
  white    the grand model plus white Gaussian noise at the real set's SNR (measured on
           the maps' real and noise-free reconstructions)
  real     the real reconstructions of the maps with their true labels: the ceiling
  oracle   `simulate` with DUAL's fitted noise model measured on paired data instead
           (the real training tomograms each with its own grand model: the transfer and
           noise no user can measure; study.PhantomStudy.oracle_model): what a linear
           image plus stationary Gaussian noise gives at best
Network (bench code, not product): a 3-D U-Net (dual_engine.nets.UNet3D, width
NET_WIDTH, depth 2) with one output per class (background, the 5 macromolecules,
vesicle membrane, gold), cross-entropy plus soft Dice, the same budget for every set
(ITERATIONS steps of BATCH random CROP^3 subvolumes, wedge-preserving flips, Adam);
every volume standardised. One such training is a poor measure of a training set: the
same set and recipe with another network seed moved mean Dice by up to 0.05 and F1 by
up to 0.06 (seeds 0-2, this benchmark; white noise's F1 by 0.25; at 1000 steps, the
loss still falling, by up to 0.09 and 0.3), as much as the sets differ. So each set
trains a network for each of NETWORK_SEEDS and a row is their mean. The sets are
paired: a network seed gives the same initial weights and draws the same maps, crops
and flips in the same order for every set (a map's variant from a stream of its own),
so that much of what one seed does to a network it does to every set's, and each row
also has its difference to the physics row network by network (minus_physics: mean
and sample std over the seeds).
Scores on the real tomograms of test seeds 8, 10 and 11 (never seen by any network or
model), the mean over the networks and test tomograms, and the sample std of the
networks' means (how much one training moves the score):
  Dice     per class, of the predicted class (argmax) against the class mask, and their
           mean over the macromolecule classes ("mean Dice")
  picking  connected components of the voxels predicted as any macromolecule, those of
           at least MIN_PARTICLE_SHARE of the smallest macromolecule's volume (the
           median voxels per particle of each class in the training maps' occupancy
           masks, the smallest of these: a picker knows its particles' size, and a
           smaller blob is a fragment or noise), their centroids matched one to one with
           the true macromolecule centres within MATCH_VOXELS: precision, recall, F1
           (the true class masks themselves score F1 0.87-0.88: every particle found,
           the subunits of a ring apart, which count as false picks)
A DUAL model other than the engine default's has a row of its own: --model FILE
--label TEXT, or --dual-seed N and/or --dual-set KEY=VALUE ... (the engine defaults
with training seed N and those settings, trained and cached like the default).
Outputs: bench/results/sim2real.json and its section of bench/results/tables.rst;
intermediates (training volumes, the networks' weights) in bench/work/sim2real/.
"""

import argparse
import datetime
import json
import os
import re
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import report  # noqa: E402
import study  # noqa: E402
from run_benchmark import add_common_arguments  # noqa: E402
from dual_engine import metrics  # noqa: E402
from dual_engine.contract import (  # noqa: E402
    DEFAULT_NOISE_MODEL,
    NOISE_MODELS,
    PHANTOM_CONTEXT_CLASSES,
    DualConfig,
)
from dual_engine.io import read_mrc, read_particle_locations, standardize  # noqa: E402

SET = "denoise"
SIM_VARIANTS = 2
OTHER_ACQUISITION = {"defocus_um": 5.0, "dose": 60.0, "tilt_step": 4.0}  # real: 3 um, 100, 3
NET_WIDTH = 8
ITERATIONS = 2000
BATCH = 4
CROP = 32
LEARNING_RATE = 1e-3
NETWORK_SEEDS = (0, 1, 2)
MIN_PARTICLE_SHARE = 0.5  # of the smallest macromolecule's volume: smaller blobs are not picks
MATCH_VOXELS = 5.0  # 50 A: half the smallest macromolecule (the ~10 nm dimer)
LABELS = {
    "dual": "DUAL simulations (%s)" % study.engine_defaults(),
    "physics": "physics simulator, other acquisition",
    "white": "grand model + white noise",
    "real": "real tomograms (ceiling)",
    "oracle": "linear-Gaussian oracle (fitted noise model measured on paired real data)",
}


def row_order(key, labels=LABELS):
    """Where a results row goes: a study's own rows in `labels`' order, then the rest."""
    return list(labels).index(key) if key in labels else len(labels)


class Sim2Real(study.PhantomStudy):
    def __init__(self, args):
        super().__init__(args, SET, "sim2real")
        from dual_engine.synth.packing import CLASS_IDS

        self.class_ids = dict(CLASS_IDS)
        self.n_classes = max(self.class_ids.values()) + 1
        s = study.SETS[SET]
        self.maps, self.test = s["clean"], s["test"]

    # ------------------------------------------------------------ training sets
    def labels(self, seed):
        return np.array(read_mrc(self.path(seed, "class_mask"))[0], dtype=np.int64)

    def training_set(self, method):
        """[[(standardised tomogram, class labels) of each variant] of each map]: one
        training set, by map (the real, white and physics sets have one variant)."""
        if method == "real":
            return [
                [(self.bench.volume(SET, k, "reconstruction"), self.labels(k))] for k in self.maps
            ]
        if method == "white":
            return [[(self.white_noise(k), self.labels(k))] for k in self.maps]
        if method == "physics":
            return [[(self.other_acquisition(k), self.labels(k))] for k in self.maps]
        if method == "oracle":
            model = self.oracle_model(self.args.threads)
            return [
                self.dual_simulation(k, SIM_VARIANTS, model, "oracle", "fitted") for k in self.maps
            ]
        return self.dual_simulations()

    def real_snr(self):
        """The real set's SNR: var(noise-free reconstruction) / var(noise), over the maps."""
        ratios = []
        for k in self.maps:
            noisy, clean = self.load(k, "reconstruction"), self.load(k, "reconstruction_noisefree")
            ratios.append(float(np.var(clean, dtype=np.float64) / np.var(noisy - clean)))
        return float(np.mean(ratios))

    def white_noise(self, seed):
        rng = np.random.default_rng(1000 + seed)
        clean = self.bench.volume(SET, seed, "grandmodel")
        noise = rng.standard_normal(clean.shape).astype(np.float32) / np.sqrt(self.real_snr())
        return standardize(clean + noise)

    def other_acquisition(self, seed):
        """The physics simulator on map `seed` (same packing: same seed) with
        OTHER_ACQUISITION; its reconstruction, standardised."""
        from dual_engine.synth.phantom import make_phantom

        params = dict(self.bench.phantom_params(SET, seed), **OTHER_ACQUISITION)
        params["write_noise_free"] = False
        outdir = os.path.join(self.work, "physics", "seed%03d" % seed)
        stamp = os.path.join(outdir, "bench_params.json")
        if study.load_json(stamp) != study.canonical(params) or self.args.force:
            study.log("physics simulator, other acquisition, seed %d" % seed)
            p = dict(params)
            make_phantom(outdir, shape=tuple(p.pop("shape")), **p)
            study.save_json(stamp, study.canonical(params))
        labels = np.array(read_mrc(os.path.join(outdir, "class_mask.mrc"))[0])
        if not np.array_equal(labels, self.labels(seed)):
            raise RuntimeError("the physics simulator packed map %d differently" % seed)
        return standardize(np.array(read_mrc(os.path.join(outdir, "reconstruction.mrc"))[0]))

    def dual_model(self):
        """(path, cache key) of the DUAL model: --model, or the engine-default one
        (with --dual-set's settings and training seed --dual-seed)."""
        if self.args.model:
            path = os.path.abspath(self.args.model)
            return path, {"path": path, "modified": os.path.getmtime(path)}
        return self.default_denoiser(self.args.threads, self.args.dual_seed, self.args.dual_set)

    def dual_simulations(self):
        """SIM_VARIANTS DUAL simulations of each map, with the labels that `simulate`
        writes beside them (the map's own, checked here against the phantom's)."""
        model, folder = self.dual_model(), self.args.dual_key
        return [self.dual_simulation(k, SIM_VARIANTS, model, folder) for k in self.maps]

    def dual_simulation(self, seed, variants, model, folder="dual", noise_model=None):
        """[(standardised simulation, class labels)] of map `seed`: `variants` draws of
        `simulate` with model = (path, cache key) and `noise_model` (default
        --dual-noise-model), cached in <work>/<folder>."""
        from dual_engine import infer

        path, key = model
        noise_model = noise_model or self.args.dual_noise_model
        outdir = os.path.join(self.work, folder, "seed%03d" % seed)
        stamp = os.path.join(outdir, "bench_simulation.json")
        key = {"model": key, "variants": variants, "noise_model": noise_model}
        if (study.load_json(stamp) or {}).get("key") != study.canonical(key) or self.args.force:
            study.log("DUAL simulations of map %d" % seed)
            result = infer.simulate(
                path,
                self.path(seed, "grandmodel"),
                outdir,
                variants=variants,
                seed=seed,
                threads=self.args.threads,
                noise_model=noise_model,
            )
            study.save_json(stamp, {"key": study.canonical(key), "result": result})
        result = study.load_json(stamp)["result"]
        pairs = []
        for tomogram, labels in zip(result["outputs"], result["labels"]):
            mask = np.array(read_mrc(labels["class_mask.mrc"])[0], dtype=np.int64)
            if not np.array_equal(mask, self.labels(seed)):
                raise RuntimeError("the labels of %s are not its map's" % tomogram)
            pairs.append((standardize(np.array(read_mrc(tomogram)[0])), mask))
        return pairs

    # ------------------------------------------------------------ network
    def train_network(self, method, maps, seed):
        import torch
        import torch.nn.functional as F
        from dual_engine.nets import UNet3D

        torch.manual_seed(seed)
        # paired sets: one seed draws the same maps, crops and flips in the same order for
        # every set (its initial weights are the same too), so that two sets' networks
        # differ by what the tomograms look like; the variant of a map comes from a
        # stream of its own
        rng, variant_rng = np.random.default_rng(seed), np.random.default_rng([seed, 1])
        net = UNet3D(width=NET_WIDTH, depth=2, out_channels=self.n_classes)
        optimiser = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
        curve, t0 = [], time.perf_counter()
        for step in range(1, self.args.iterations + 1):
            volumes, targets = [], []
            for _ in range(BATCH):
                variants = maps[rng.integers(len(maps))]
                volume, labels = variants[variant_rng.integers(len(variants))]
                corner = [rng.integers(0, n - CROP + 1) for n in volume.shape]
                box = tuple(slice(c, c + CROP) for c in corner)
                v, t = volume[box], labels[box]
                for axis in range(3):  # flips of z, y or x keep a wedge about Y
                    if rng.random() < 0.5:
                        v, t = np.flip(v, axis), np.flip(t, axis)
                volumes.append(np.ascontiguousarray(v))
                targets.append(np.ascontiguousarray(t))
            x = torch.from_numpy(np.stack(volumes)[:, None])
            y = torch.from_numpy(np.stack(targets))
            logits = net(x)
            loss = F.cross_entropy(logits, y) + soft_dice_loss(logits, y, self.n_classes)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            curve.append(loss.item())
            if step % 250 == 0:
                study.log(
                    "%s, network seed %d: step %d/%d loss %.3f"
                    % (method, seed, step, self.args.iterations, np.mean(curve[-50:]))
                )
        return net, {
            "seconds": round(time.perf_counter() - t0, 1),
            "loss_every_250": [
                round(float(np.mean(curve[i - 50 : i])), 4)
                for i in range(250, self.args.iterations + 1, 250)
            ],
        }

    def network_settings(self):
        """How every row's networks are trained (rows compare only when it is the same)."""
        return {
            "width": NET_WIDTH,
            "depth": 2,
            "iterations": self.args.iterations,
            "seeds": self.args.network_seeds,
            "batch": BATCH,
            "crop": CROP,
            "learning_rate": LEARNING_RATE,
            "sampling": "paired by map",
        }

    @staticmethod
    def segment(net, volume):
        """Class per voxel (argmax) of a whole standardised volume, in one pass (its sides
        are multiples of 4, as the U-Net needs; a 64x256x256 volume fits in memory)."""
        import torch

        with torch.no_grad():
            logits = net(torch.from_numpy(np.ascontiguousarray(volume))[None, None])
        return logits[0].argmax(dim=0).numpy()

    # ------------------------------------------------------------ scores
    def particles(self, seed):
        return read_particle_locations(
            os.path.join(self.bench.phantom_dir(SET, seed), "particle_locations.txt")
        )

    def scores(self, predicted, seed, min_component):
        true = np.array(
            [p.xyz for p in self.particles(seed) if p.name not in PHANTOM_CONTEXT_CLASSES]
        ).reshape(-1, 3)
        return segmentation_scores(
            predicted, self.labels(seed), true, self.class_ids, min_component
        )

    def smallest_particle_voxels(self):
        """The smallest macromolecule's volume in voxels: the median voxels per particle
        of each macromolecule class in the training maps' occupancy masks (instance =
        line of particle_locations.txt), the smallest of these medians."""
        sizes = {}
        for k in self.maps:
            occupancy = np.array(read_mrc(self.path(k, "occupancy_mask"))[0], dtype=np.int64)
            particles = self.particles(k)
            voxels = np.bincount(occupancy.ravel(), minlength=len(particles) + 1)
            for instance, p in enumerate(particles, start=1):
                if p.name not in PHANTOM_CONTEXT_CLASSES:
                    sizes.setdefault(p.name, []).append(voxels[instance])
        return float(min(np.median([v for v in s if v > 0]) for s in sizes.values()))

    # ------------------------------------------------------------ run
    def run(self):
        import torch

        torch.set_num_threads(self.args.threads)
        for k in self.maps + self.test + study.SETS[SET]["noisy"]:
            self.bench.phantom(SET, k)
        path = os.path.join(self.bench.results, "sim2real.json")
        data = study.load_json(path, {}) or {}
        network = self.network_settings()
        smallest = self.smallest_particle_voxels()
        picking = {
            "min_particle_share": MIN_PARTICLE_SHARE,
            "smallest_particle_voxels": smallest,
            "min_component_voxels": int(np.ceil(MIN_PARTICLE_SHARE * smallest)),
            "match_voxels": MATCH_VOXELS,
        }
        # a row from other networks (budget, sampling, seeds) or scored by another
        # picking rule compares with nothing here
        methods = {
            k: v
            for k, v in data.get("methods", {}).items()
            if v.get("network") == network and v.get("picking") == picking
        }
        for key in sorted(set(data.get("methods", {})) - set(methods)):
            study.log("row %s dropped: its networks were trained or scored otherwise" % key)
        command = "python bench/run_sim2real.py " + " ".join(self.args.argv)
        # the networks' weights, so that a scoring rule can be studied without training again
        kept = os.path.join(self.work, "networks")
        os.makedirs(kept, exist_ok=True)
        for method in self.args.methods:
            key, label = method, LABELS[method]
            if method == "dual" and self.args.dual_label:
                key, label = self.args.dual_key, self.args.dual_label
            study.log("training set: %s" % label)
            maps = self.training_set(method)
            networks = {}
            for seed in self.args.network_seeds:
                net, training = self.train_network(method, maps, seed)
                torch.save(net.state_dict(), os.path.join(kept, "%s_seed%d.pt" % (key, seed)))
                per_test = {}
                for k in self.test:
                    per_test[k] = self.scores(
                        self.segment(net, self.bench.volume(SET, k, "reconstruction")),
                        k,
                        picking["min_component_voxels"],
                    )
                    study.log(
                        "%s, network seed %d, test seed %d: mean Dice %.3f, F1 %.3f"
                        % (method, seed, k, per_test[k]["mean_dice"], per_test[k]["f1"])
                    )
                networks[seed] = {"training": training, "per_test_seed": per_test}
            methods[key] = {
                "label": label,
                "command": command,
                "date": datetime.datetime.now().isoformat(timespec="seconds"),
                "training_volumes": sum(len(variants) for variants in maps),
                "network": network,
                "picking": picking,
                "networks": networks,
                **summary(networks),
            }
            for name, row in methods.items():
                if name != "physics":  # none without a physics row of the same networks
                    physics = methods.get("physics")
                    row["minus_physics"] = physics and paired_difference(row, physics)
            data.update(
                {
                    "benchmark": "sim-to-real segmentation (paper Figs. 4-5) on phantoms",
                    "updated": methods[key]["date"],
                    "last_command": command,
                    "machine": study.machine(),
                    "maps": self.maps,
                    "test_seeds": self.test,
                    "real_snr": self.real_snr(),
                    "other_acquisition": OTHER_ACQUISITION,
                    "network": network,
                    "picking": picking,
                    # this study's rows in LABELS' order, then any kept from other
                    # configurations
                    "methods": dict(sorted(methods.items(), key=lambda kv: row_order(kv[0]))),
                }
            )
            study.save_json(path, data)
        report.write_tables(self.bench.results)


def summary(networks):
    """Mean of each score over every network and test tomogram; sample std of the
    networks' own means (the spread of one training); mean training seconds. Scores
    are those every test tomogram of every network has (a class absent from one test
    tomogram has no Dice there)."""
    tests = [t for n in networks.values() for t in n["per_test_seed"].values()]
    keys = sorted(set.intersection(*(set(t) for t in tests)))
    per_network = list(network_means(networks, keys).values())
    spread = len(per_network) > 1
    return {
        "mean": {key: float(np.mean([m[key] for m in per_network])) for key in keys},
        "std": {
            key: float(np.std([m[key] for m in per_network], ddof=1)) if spread else 0.0
            for key in keys
        },
        "seconds_per_network": round(
            float(np.mean([n["training"]["seconds"] for n in networks.values()])), 1
        ),
    }


def network_means(networks, keys):
    """{network seed: {score: its mean over the test tomograms}}."""
    return {
        seed: {key: float(np.mean([t[key] for t in n["per_test_seed"].values()])) for key in keys}
        for seed, n in networks.items()
    }


def paired_difference(row, reference, keys=("mean_dice", "f1")):
    """Row minus reference, network by network (the seeds both trained: same initial
    weights, same crops), as {score: [mean, sample std]} over those seeds; None when
    they share fewer than two."""
    # seeds are ints in a fresh row, strings in one read back from JSON
    mine, theirs = (
        {str(seed): means for seed, means in network_means(r["networks"], keys).items()}
        for r in (row, reference)
    )
    seeds = sorted(set(mine) & set(theirs))
    if len(seeds) < 2:
        return None
    out = {}
    for key in keys:
        differences = [mine[seed][key] - theirs[seed][key] for seed in seeds]
        out[key] = [float(np.mean(differences)), float(np.std(differences, ddof=1))]
    return out


def segmentation_scores(predicted, truth, centres, class_ids, min_component):
    """Dice per class present in `truth` (class per voxel) and their mean over the
    macromolecules; picking precision, recall and F1 of the centroids of predicted
    macromolecule components (of >= min_component voxels) against `centres` (x, y, z)."""
    out = {}
    for name, index in class_ids.items():
        p, t = predicted == index, truth == index
        if t.any():
            out["dice_%s" % name] = float(2 * (p & t).sum() / (p.sum() + t.sum()))
    macromolecules = [n for n in class_ids if n not in PHANTOM_CONTEXT_CLASSES]
    out["mean_dice"] = float(
        np.mean([out["dice_%s" % n] for n in macromolecules if "dice_%s" % n in out])
    )
    particles = np.isin(predicted, [class_ids[n] for n in macromolecules])
    components, count = ndimage.label(particles)
    sizes = ndimage.sum(particles, components, range(1, count + 1))
    keep = [i + 1 for i, size in enumerate(np.atleast_1d(sizes)) if size >= min_component]
    found = ndimage.center_of_mass(particles, components, keep) if keep else []
    picks = np.array([(x, y, z) for z, y, x in found]).reshape(-1, 3)
    match = metrics.match_picks(picks, centres, MATCH_VOXELS)
    out.update({k: match[k] for k in ("precision", "recall", "f1", "n_picks", "n_truth")})
    return out


def soft_dice_loss(logits, target, n_classes):
    """1 - mean soft Dice over the classes present in the batch."""
    import torch
    import torch.nn.functional as F

    probabilities = torch.softmax(logits, dim=1)
    one_hot = F.one_hot(target, n_classes).permute(0, 4, 1, 2, 3).float()
    dims = (0, 2, 3, 4)
    present = one_hot.sum(dims) > 0
    dice = (2 * (probabilities * one_hot).sum(dims) + 1) / (
        probabilities.sum(dims) + one_hot.sum(dims) + 1
    )
    return 1 - dice[present].mean()


def add_model_arguments(ap):
    ap.add_argument("--model", help="a DUAL model file to use instead of the engine default")
    ap.add_argument(
        "--label", help="what that model is (its row: 'DUAL, <label>', beside the default's)"
    )
    ap.add_argument(
        "--dual-seed",
        type=int,
        default=0,
        help="training seed of the engine-default DUAL model (default 0; another seed "
        "trains and caches its own model, and has a row of its own)",
    )
    ap.add_argument(
        "--dual-noise-model",
        choices=NOISE_MODELS,
        default=DEFAULT_NOISE_MODEL,
        help="how DUAL's tomograms are simulated (the engine's `simulate --noise-model`; "
        "default %s); another has a row of its own" % DEFAULT_NOISE_MODEL,
    )
    ap.add_argument(
        "--dual-set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="engine settings (DualConfig's names, JSON values; not the seed) that the "
        "DUAL model changes from the defaults; its own cached model and row",
    )


def parse_model_arguments(ap, argv):
    """Parsed arguments, with the DUAL row's key in the results (and its work folder),
    dual_key, and its label, dual_label: 'dual' and None (the caller's own) for the
    engine-default model of seed 0 and noise model; for a --model, 'dual_<label as a
    slug>[_<noise model>_noise]'; for other settings, seed or noise model,
    'dual[_<noise model>_noise]_<setting><value>..._seed<N>'."""
    args = ap.parse_args(argv)
    args.argv = list(argv)
    settings = {}
    for item in args.dual_set:
        name, equals, value = item.partition("=")
        try:
            if not equals:
                raise ValueError("no '='")
            settings[name] = json.loads(value)
        except ValueError as err:
            ap.error("--dual-set %s: not KEY=VALUE with a JSON value (%s)" % (item, err))
    args.dual_set = settings
    if "seed" in settings:
        ap.error("the training seed is --dual-seed")
    try:
        DualConfig(**settings)
    except (TypeError, ValueError) as err:  # unknown name, value out of range
        ap.error("--dual-set: %s" % err)
    if bool(args.model) != bool(args.label):
        ap.error("--model and --label go together")
    if args.model and (args.dual_seed or args.dual_set):
        ap.error("--dual-seed and --dual-set train an engine model; not with --model")
    args.dual_key, args.dual_label = "dual", None
    noise = []
    if args.dual_noise_model != DEFAULT_NOISE_MODEL:
        noise = ["%s noise" % args.dual_noise_model]
    if args.model:
        label = ", ".join([args.label] + noise)
        args.dual_key, args.dual_label = "dual_" + slug(label), "DUAL, " + label
    elif args.dual_seed or args.dual_set or noise:
        parts = noise + ["%s%s" % (k, v) for k, v in sorted(args.dual_set.items())]
        described = ["%s noise" % args.dual_noise_model]
        described += ["%s %s" % (k, v) for k, v in sorted(args.dual_set.items())]
        if args.dual_seed:
            parts.append("seed%d" % args.dual_seed)
            described.append("training seed %d" % args.dual_seed)
        args.dual_key = "dual_" + "_".join(slug(p) for p in parts)
        args.dual_label = "DUAL (engine defaults, %s)" % ", ".join(described)
    return args


def slug(text):
    return re.sub(r"\W+", "_", text).strip("_").lower()


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", nargs="+", choices=list(LABELS), default=list(LABELS))
    ap.add_argument(
        "--iterations",
        type=int,
        default=ITERATIONS,
        help="training steps of each network (default %d; fewer: a smoke test)" % ITERATIONS,
    )
    ap.add_argument(
        "--network-seeds",
        type=int,
        nargs="+",
        default=list(NETWORK_SEEDS),
        help="seeds of the segmentation networks each training set trains (default %s)"
        % " ".join(map(str, NETWORK_SEEDS)),
    )
    add_model_arguments(ap)
    add_common_arguments(ap, threads=2)
    return parse_model_arguments(ap, argv)


if __name__ == "__main__":
    Sim2Real(parse(sys.argv[1:])).run()
