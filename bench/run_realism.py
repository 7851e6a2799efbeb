#!/usr/bin/env python
"""How realistic are DUAL's simulated tomograms, and what gives them away? Spectra,
missing wedge, noise statistics and a classifier two-sample test against real
tomograms, beside two baselines and a real-vs-real reference.

    python bench/run_realism.py --threads 2     # makes the phantoms and model it needs

Data: the denoising set of run_benchmark.py, as run_sim2real.py uses it. "Real"
tomograms: the reconstructions of seeds REAL_SEEDS, which the DUAL model never saw
(it trained on reconstructions 0-3 and grand models 4-7). Each simulator turns the
grand models of those same seeds into tomograms:
  dual       `simulate` with the engine-default model of run_sim2real.py (or --model),
             its noise model's share of structure measured on the training
             tomograms' even/odd halves (every bench phantom has them)
  physics    the physics simulator with another acquisition than the real set's
             (run_sim2real.OTHER_ACQUISITION), as a user who does not know the microscope
  white      the grand model plus white Gaussian noise at the real set's SNR
  real       reference: reconstructions of other specimens (seeds REFERENCE_SEEDS) made
             the same way as the real ones, which no classifier should tell apart
  oracle     `simulate` with DUAL's fitted noise model measured on paired data (the real
             training tomograms each with its own grand model; run_sim2real.py): the
             best a linear image plus stationary Gaussian noise can do
Scores, mean over the four real tomograms (or the two folds):
  spectrum   RMS difference of log10 radial power spectra (standardised volumes), over
             0.02-0.5 cycles/voxel; the real set's own spread is the same distance
             between real tomograms of different specimens
  wedge      Fourier power inside the missing cone over the power outside it
             (0.05-0.3 cycles/voxel), and its ratio to the real one
  AUC        a small 3-D CNN learns to tell real from simulated 32^3 subvolumes on two
             seeds and is scored on the other two (two folds): ROC AUC on held-out
             tomograms (0.5 = indistinguishable) along its training curve
  giveaways  what differs, measured: the share of band power along each Fourier axis
             (kz is the beam: the missing wedge), the value distribution's skewness and
             excess kurtosis, the neighbour correlation along each axis (the noise's
             spatial correlation), the correlation with the grand model (how much
             of the map shows through the noise) and the spread of the means and
             standard deviations of the 8 interleaved sublattices of voxels (a period-2
             pattern: what a transposed convolution leaves); per 32^3 subvolume, the
             AUC of single statistics (band power shares, missing-cone power, that
             sublattice spread, roughness along each axis, skewness, kurtosis, the
             spread of the noise level over 8^3 blocks): which of them alone tell
             the simulations from real tomograms
A DUAL model other than the engine default's has a row of its own: --model FILE
--label TEXT, or --dual-seed N and/or --dual-set KEY=VALUE ... (the engine defaults
with training seed N and those settings, trained and cached like the default).
Outputs: bench/results/realism.json and its section of bench/results/tables.rst.
"""

import argparse
import datetime
import itertools
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import report  # noqa: E402
import run_sim2real  # noqa: E402
import study  # noqa: E402
from run_benchmark import add_common_arguments  # noqa: E402
from dual_engine import wedge  # noqa: E402
from dual_engine.io import standardize  # noqa: E402

SET = run_sim2real.SET
REAL_SEEDS = [8, 9, 10, 11]
REFERENCE_SEEDS = [0, 1, 2, 3]  # real-vs-real: fake = these, paired with REAL_SEEDS
FOLDS = [([8, 9], [10, 11]), ([10, 11], [8, 9])]  # (classifier training, test)
SIMULATORS = {
    "dual": "DUAL (%s)" % study.engine_defaults(),
    "physics": "Physics simulator, other acquisition",
    "white": "Grand model + white noise (matched SNR)",
    "real": "Real tomograms of other specimens (reference)",
    "oracle": "Linear-Gaussian oracle (fitted noise model measured on paired real data)",
}
SPECTRUM_BAND = (0.02, 0.5)
WEDGE_BAND = (0.05, 0.3)
PATCH = 32
AUC_PATCHES = 400
STEPS = [25, 50, 100, 200, 400, 800]


def power_spectrum(volume):
    """(|rfftn|^2 of the standardised volume, radial frequency of each coefficient)."""
    return np.abs(np.fft.rfftn(standardize(volume))) ** 2, wedge.radial_frequency(volume.shape)


def radial_log_spectrum(volume, bins=32):
    power, radius = power_spectrum(volume)
    edges = np.linspace(SPECTRUM_BAND[0], SPECTRUM_BAND[1], bins + 1)
    which = np.digitize(radius.ravel(), edges) - 1
    inside = (which >= 0) & (which < bins)
    total = np.bincount(which[inside], weights=power.ravel()[inside], minlength=bins)
    count = np.bincount(which[inside], minlength=bins)
    return np.log10(total / np.maximum(count, 1))


def spectrum_distance(a, b):
    return float(np.sqrt(np.mean((radial_log_spectrum(a) - radial_log_spectrum(b)) ** 2)))


def wedge_power_ratio(volume, tilt_range):
    power, radius = power_spectrum(volume)
    band = (radius >= WEDGE_BAND[0]) & (radius <= WEDGE_BAND[1])
    cone = wedge.cone_mask(volume.shape, tilt_range, band=WEDGE_BAND)
    return float(power[cone].mean() / power[band & ~cone].mean())


def axis_power(volume):
    """{axis: mean power within 25 degrees of that Fourier axis / mean power of the band}
    (WEDGE_BAND): 1 everywhere for an isotropic volume; kz ~0 where the beam's missing
    wedge is."""
    power, radius = power_spectrum(volume)
    band = (radius >= WEDGE_BAND[0]) & (radius <= WEDGE_BAND[1])
    nz, ny, nx = volume.shape
    freqs = {
        "kz": np.fft.fftfreq(nz)[:, None, None],
        "ky": np.fft.fftfreq(ny)[None, :, None],
        "kx": np.fft.rfftfreq(nx)[None, None, :],
    }
    near = np.cos(np.radians(25))
    out = {}
    for name, f in freqs.items():
        along = band & (np.abs(f) >= near * np.maximum(radius, 1e-12))
        out[name] = float(power[along].mean() / power[band].mean())
    return out


def noise_statistics(volume, grand_model):
    """The value distribution, neighbour correlations and correlation with the map."""
    from scipy import stats

    v = standardize(volume)
    values = v.ravel()
    out = {
        "skewness": float(stats.skew(values)),
        "excess_kurtosis": float(stats.kurtosis(values)),
        "grand_model_correlation": float(np.corrcoef(values, grand_model.ravel())[0, 1]),
    }
    for axis, name in enumerate("zyx"):
        out["neighbour_correlation_" + name] = float(np.mean(v * np.roll(v, 1, axis)))
    # a period-2 pattern (a transposed convolution's): the 8 interleaved sublattices of
    # the volume (voxels with the same parity of z, y and x) differ in mean or spread
    sub = [v[a::2, b::2, c::2] for a, b, c in itertools.product((0, 1), repeat=3)]
    out["sublattice_mean_spread"] = float(np.std([s.mean() for s in sub]))
    out["sublattice_std_spread"] = float(np.std([s.std() for s in sub]))
    return out


class Classifier:
    """A small 3-D CNN: real (1) vs simulated (0) subvolumes."""

    def __init__(self, seed=0):
        import torch
        from torch import nn

        torch.manual_seed(seed)
        self.net = nn.Sequential(
            nn.Conv3d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool3d(2),
            nn.Conv3d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool3d(2),
            nn.Conv3d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool3d(1),
            nn.Flatten(),
            nn.Linear(32, 1),
        )
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-3)

    @staticmethod
    def patches(volumes, count, rng):
        out = np.empty((count, 1, PATCH, PATCH, PATCH), dtype=np.float32)
        for i in range(count):
            v = volumes[rng.integers(len(volumes))]
            c = [rng.integers(0, n - PATCH + 1) for n in v.shape]
            out[i, 0] = v[c[0] : c[0] + PATCH, c[1] : c[1] + PATCH, c[2] : c[2] + PATCH]
        return out

    def fit(self, real, fake, steps, rng, batch=16):
        """`steps` Adam steps; returns the mean training loss over them."""
        import torch

        loss_fn = torch.nn.BCEWithLogitsLoss()
        labels = torch.cat([torch.ones(batch // 2, 1), torch.zeros(batch // 2, 1)])
        total = 0.0
        for _ in range(steps):
            x = np.concatenate(
                [self.patches(real, batch // 2, rng), self.patches(fake, batch // 2, rng)]
            )
            loss = loss_fn(self.net(torch.from_numpy(x)), labels)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            total += loss.item()
        return total / max(steps, 1)

    def auc(self, real, fake, count, rng):
        import torch

        with torch.no_grad():
            s_real = self.net(torch.from_numpy(self.patches(real, count, rng))).ravel().numpy()
            s_fake = self.net(torch.from_numpy(self.patches(fake, count, rng))).ravel().numpy()
        # Mann-Whitney U: P(score of a real patch > score of a simulated one)
        from scipy.stats import rankdata

        ranks = rankdata(np.concatenate([s_real, s_fake]))  # ties share their mean rank
        return float((ranks[:count].sum() - count * (count + 1) / 2) / (count * count))


def classifier_curve(real, fake, steps):
    """Two folds (FOLDS) of a classifier trained on real[train] vs fake[train] and
    scored on the held-out real[test] vs fake[test]: per fold, the held-out AUC and the
    training loss at each of `steps`."""
    folds = []
    for number, (train, test) in enumerate(FOLDS):
        classifier, done, rng = Classifier(seed=number), 0, np.random.default_rng(number)
        curve = []
        for step in sorted(steps):
            loss = classifier.fit(
                [real[k] for k in train], [fake[k] for k in train], step - done, rng
            )
            done = step
            auc = classifier.auc(
                [real[k] for k in test],
                [fake[k] for k in test],
                AUC_PATCHES,
                np.random.default_rng(100 + number),
            )
            curve.append({"step": step, "auc": auc, "training_loss": loss})
        folds.append({"train": train, "test": test, "curve": curve})
    return folds


FEATURE_PATCHES = 300  # per tomogram
FEATURE_BANDS = [(0.0, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.4), (0.4, 0.9)]  # cycles/voxel
LOCAL_BLOCK = 8  # side of the blocks whose standard deviations patch_features compares


def patch_features(patch):
    """Scalar statistics of one PATCH^3 subvolume that a classifier could use: the share
    of its power in each band of FEATURE_BANDS and inside the missing cone (within 30
    degrees of kz), the spread of the means of its 8 interleaved sublattices (a period-2
    pattern), its roughness along each axis (the standard deviation of neighbour
    differences over its own), its skewness and excess kurtosis, and the spread of the
    standard deviations of its LOCAL_BLOCK^3 blocks over their mean (how far the noise
    level follows the structures: a reconstruction's noise is the same everywhere)."""
    p = patch - patch.mean()
    power = np.abs(np.fft.fftn(p)) ** 2
    k = np.fft.fftfreq(PATCH)
    kz, ky, kx = np.meshgrid(k, k, k, indexing="ij")
    radius = np.sqrt(kz**2 + ky**2 + kx**2)
    total = power.sum()
    out = {
        "band_%.1f_%.1f" % band: float(
            power[(radius >= band[0]) & (radius < band[1])].sum() / total
        )
        for band in FEATURE_BANDS
    }
    cone = (np.abs(kz) > np.cos(np.radians(30)) * radius) & (radius > 0.05)
    out["cone"] = float(power[cone].sum() / total)
    sub = [p[a::2, b::2, c::2].mean() for a, b, c in itertools.product((0, 1), repeat=3)]
    out["sublattice_mean_spread"] = float(np.std(sub))
    for axis, name in enumerate("zyx"):
        out["roughness_" + name] = float(np.diff(p, axis=axis).std() / p.std())
    z = p.ravel() / p.std()
    out["skewness"] = float(np.mean(z**3))
    out["excess_kurtosis"] = float(np.mean(z**4) - 3)
    n = PATCH // LOCAL_BLOCK
    blocks = p.reshape(n, LOCAL_BLOCK, n, LOCAL_BLOCK, n, LOCAL_BLOCK).std(axis=(1, 3, 5))
    out["local_std_spread"] = float(blocks.std() / blocks.mean())
    return out


def feature_aucs(real, fake, seeds):
    """{feature: ROC AUC of that one statistic (patch_features), real against
    simulated subvolumes of `seeds`}: 0.5 = no help to a classifier, 0 or 1 = alone it
    tells them apart."""
    from scipy.stats import rankdata

    rng = np.random.default_rng(7)
    sides = []
    for volumes in (real, fake):
        patches = Classifier.patches([volumes[k] for k in seeds], FEATURE_PATCHES * len(seeds), rng)
        sides.append([patch_features(p[0]) for p in patches])
    out = {}
    for name in sides[0][0]:
        a, b = (np.array([f[name] for f in side]) for side in sides)
        ranks = rankdata(np.concatenate([a, b]))
        out[name] = float((ranks[: len(a)].sum() - len(a) * (len(a) + 1) / 2) / (len(a) * len(b)))
    return out


def summary(values):
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1))}


class Realism(run_sim2real.Sim2Real):
    """The simulators of run_sim2real.py (DUAL, physics with another acquisition, white
    noise) applied to the real seeds' grand models, in this study's work folder."""

    def __init__(self, args):
        study.PhantomStudy.__init__(self, args, SET, "realism")
        from dual_engine.synth.packing import CLASS_IDS

        self.class_ids = dict(CLASS_IDS)
        self.maps = REAL_SEEDS  # run_sim2real.real_snr() measures the SNR on them

    def simulated(self, name):
        """{seed: standardised tomogram} of one simulator."""
        if name == "real":
            return {
                k: self.bench.volume(SET, r, "reconstruction")
                for k, r in zip(REAL_SEEDS, REFERENCE_SEEDS)
            }
        if name == "white":
            return {k: self.white_noise(k) for k in REAL_SEEDS}
        if name == "physics":
            return {k: self.other_acquisition(k) for k in REAL_SEEDS}
        if name == "oracle":
            model = self.oracle_model(self.args.threads)
            return {
                k: self.dual_simulation(k, 1, model, "oracle", "fitted")[0][0] for k in REAL_SEEDS
            }
        model = self.dual_model()
        folder = self.args.dual_key
        return {k: self.dual_simulation(k, 1, model, folder)[0][0] for k in REAL_SEEDS}

    def tilt_range(self, seed):
        record = os.path.join(self.bench.phantom_dir(SET, seed), "phantom.json")
        return tuple(study.load_json(record)["parameters"]["tilt_range"])

    def run(self):
        import torch

        torch.set_num_threads(self.args.threads)
        for k in REAL_SEEDS + REFERENCE_SEEDS + study.SETS[SET]["clean"]:
            self.bench.phantom(SET, k)
        real = {k: self.bench.volume(SET, k, "reconstruction") for k in REAL_SEEDS}
        maps = {k: self.bench.volume(SET, k, "grandmodel") for k in REAL_SEEDS}
        # each real tomogram's tilt range (its phantom's acquisition), for every simulator
        tilts = {k: self.tilt_range(k) for k in REAL_SEEDS}
        real_wedge = [wedge_power_ratio(real[k], tilts[k]) for k in REAL_SEEDS]
        path = os.path.join(self.bench.results, "realism.json")
        data = study.load_json(path, {}) or {}
        if data.get("set") != SET:  # an older study's file (another set): start anew
            data = {}
        entries = dict(data.get("simulators", {}))
        command = "python bench/run_realism.py " + " ".join(self.args.argv)
        for name in self.args.simulators:
            key = self.args.dual_key if name == "dual" else name
            label = self.args.dual_label if key != name else SIMULATORS[name]
            fake = self.simulated(name)
            study.log("simulated: %s" % label)
            ratios = [wedge_power_ratio(fake[k], tilts[k]) for k in REAL_SEEDS]
            folds = classifier_curve(real, fake, self.args.steps)
            final = [fold["curve"][-1]["auc"] for fold in folds]
            own = dict(zip(REAL_SEEDS, REFERENCE_SEEDS)) if name == "real" else {}
            stats = [
                noise_statistics(fake[k], self.bench.volume(SET, own.get(k, k), "grandmodel"))
                for k in REAL_SEEDS
            ]
            axes = [axis_power(fake[k]) for k in REAL_SEEDS]
            entries[key] = {
                "label": label,
                "command": command,
                "date": datetime.datetime.now().isoformat(timespec="seconds"),
                "model": self.dual_model()[0] if name == "dual" else None,
                "spectrum_rms_log10": summary(
                    [spectrum_distance(fake[k], real[k]) for k in REAL_SEEDS]
                ),
                "wedge_power_ratio": summary(ratios),
                "wedge_ratio_to_real": float(np.mean(ratios) / np.mean(real_wedge)),
                "classifier": folds,
                "classifier_auc": float(np.mean(final)),
                "axis_power": {a: float(np.mean([x[a] for x in axes])) for a in axes[0]},
                "statistics": {s: float(np.mean([x[s] for x in stats])) for s in stats[0]},
                "feature_auc": feature_aucs(real, fake, REAL_SEEDS),
            }
            study.log(
                "  %s: AUC %.3f (folds %s), spectrum %.3f, wedge ratio %.3f of real"
                % (
                    key,
                    entries[key]["classifier_auc"],
                    " ".join("%.3f" % a for a in final),
                    entries[key]["spectrum_rms_log10"]["mean"],
                    entries[key]["wedge_ratio_to_real"],
                )
            )
            real_stats = [noise_statistics(real[k], maps[k]) for k in REAL_SEEDS]
            real_axes = [axis_power(real[k]) for k in REAL_SEEDS]
            data = {
                "benchmark": "realism of simulated tomograms (phantoms)",
                "set": SET,
                "updated": entries[key]["date"],
                "machine": study.machine(),
                "real_seeds": REAL_SEEDS,
                "reference_seeds": REFERENCE_SEEDS,
                "folds": FOLDS,
                "real_snr": self.real_snr(),
                "real_wedge_power_ratio": summary(real_wedge),
                "real_spectrum_spread": summary(
                    [
                        spectrum_distance(real[a], real[b])
                        for a, b in itertools.combinations(REAL_SEEDS, 2)
                    ]
                ),
                "real_axis_power": {
                    a: float(np.mean([x[a] for x in real_axes])) for a in real_axes[0]
                },
                "real_statistics": {
                    s: float(np.mean([x[s] for x in real_stats])) for s in real_stats[0]
                },
                "simulators": dict(
                    sorted(
                        entries.items(), key=lambda kv: run_sim2real.row_order(kv[0], SIMULATORS)
                    )
                ),
            }
            study.save_json(path, data)
        print(report.write_tables(self.bench.results))


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--simulators", nargs="+", choices=list(SIMULATORS), default=list(SIMULATORS))
    ap.add_argument(
        "--steps",
        type=int,
        nargs="+",
        default=STEPS,
        help="classifier training steps at which the held-out AUC is measured",
    )
    run_sim2real.add_model_arguments(ap)
    add_common_arguments(ap, threads=2)
    return run_sim2real.parse_model_arguments(ap, argv)


if __name__ == "__main__":
    Realism(parse(sys.argv[1:])).run()
