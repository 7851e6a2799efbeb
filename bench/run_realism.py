#!/usr/bin/env python
"""How realistic are DUAL's simulated tomograms? Power spectra, missing wedge and a
classifier two-sample test against real tomograms, with two simulation baselines.

    python bench/run_realism.py --threads 2     # after run_benchmark.py trained DUAL

"Real" tomograms: the picking set of run_benchmark.py (ribosomes, contrast 0.15 V:
acquisition settings no baseline is told about), held-out test seeds 110-114. Each
simulator turns the grand models of those same seeds into tomograms:
  dual      dual_engine.infer.simulate with the DUAL model the picking benchmark chose
            (trained on seeds 100-103 and grand models 104-107: never these specimens)
  gaussian  the grand model plus Gaussian white noise at the real data's SNR (the SNR
            measured from the real tomograms and their noise-free reconstructions)
  physics   the engine's physics simulator (tilt series, CTF, Poisson noise, WBP) with
            its default parameters (dual_engine.synth.acquisition.AcquisitionParams)
Scores (mean and sample std over the five test tomograms where per tomogram):
  spectrum  RMS difference of log10 radial power spectra (standardised volumes),
            simulated vs real, over 0.02-0.5 cycles/voxel (0 = the same spectrum)
  wedge     the Fourier power inside the real data's missing cone over the power
            outside it (0.05-0.3 cycles/voxel), and its log10 ratio to the real one's
  AUC       a small 3-D CNN learns to tell real from simulated 32^3 subvolumes of seeds
            110-112 (batch 16), and is scored on 500 + 500 subvolumes of 113-114: ROC
            AUC on those held-out tomograms (0.5 = indistinguishable), after 50, 200
            and 1500 training steps (how hard, not only whether, it tells them apart)
Outputs: bench/results/realism.json and the section of bench/results/tables.rst.
"""

import argparse
import datetime
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import methods  # noqa: E402
import report  # noqa: E402
import study  # noqa: E402
from run_benchmark import add_common_arguments  # noqa: E402
from dual_engine import wedge  # noqa: E402
from dual_engine.io import read_mrc, standardize, write_mrc  # noqa: E402

SET = "picking"
TRAIN_SEEDS, TEST_SEEDS = [110, 111, 112], [113, 114]
SIMULATORS = {
    "dual": "DUAL (learned)",
    "gaussian": "Grand model + Gaussian noise (matched SNR)",
    "physics": "Physics simulator, default parameters",
}
SPECTRUM_BAND = (0.02, 0.5)
WEDGE_BAND = (0.05, 0.3)
PATCH = 32


def radial_log_spectrum(volume, bins=32):
    power = np.abs(np.fft.rfftn(standardize(volume))) ** 2
    radius = wedge.radial_frequency(volume.shape)
    edges = np.linspace(SPECTRUM_BAND[0], SPECTRUM_BAND[1], bins + 1)
    which = np.digitize(radius.ravel(), edges) - 1
    inside = (which >= 0) & (which < bins)
    total = np.bincount(which[inside], weights=power.ravel()[inside], minlength=bins)
    count = np.bincount(which[inside], minlength=bins)
    return np.log10(total / np.maximum(count, 1))


def wedge_power_ratio(volume, tilt_range):
    power = np.abs(np.fft.rfftn(standardize(volume))) ** 2
    radius = wedge.radial_frequency(volume.shape)
    band = (radius >= WEDGE_BAND[0]) & (radius <= WEDGE_BAND[1])
    cone = wedge.cone_mask(volume.shape, tilt_range, band=WEDGE_BAND)
    return float(power[cone].mean() / power[band & ~cone].mean())


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
        import torch

        loss_fn = torch.nn.BCEWithLogitsLoss()
        labels = torch.cat([torch.ones(batch // 2, 1), torch.zeros(batch // 2, 1)])
        for _ in range(steps):
            x = np.concatenate(
                [self.patches(real, batch // 2, rng), self.patches(fake, batch // 2, rng)]
            )
            loss = loss_fn(self.net(torch.from_numpy(x)), labels)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()

    def auc(self, real, fake, count, rng):
        import torch

        with torch.no_grad():
            s_real = self.net(torch.from_numpy(self.patches(real, count, rng))).ravel().numpy()
            s_fake = self.net(torch.from_numpy(self.patches(fake, count, rng))).ravel().numpy()
        # Mann-Whitney U: P(score of a real patch > score of a simulated one)
        from scipy.stats import rankdata

        ranks = rankdata(np.concatenate([s_real, s_fake]))  # ties share their mean rank
        return float((ranks[:count].sum() - count * (count + 1) / 2) / (count * count))


class Realism(study.PhantomStudy):
    def __init__(self, args):
        super().__init__(args, SET, "realism")

    def dual_model(self):
        outdir = os.path.join(os.path.abspath(self.args.work), "dual", SET)
        record = study.load_json(os.path.join(outdir, "bench_training.json"))
        if not record or "chosen_iteration" not in record:
            raise SystemExit(
                "no DUAL model for the picking set: run "
                "bench/run_benchmark.py --methods dual --sets picking first"
            )
        return methods.snapshot_path(outdir, record["chosen_iteration"])

    def simulate(self, name, seed, snr):
        out = os.path.join(self.work, name, "seed%03d.mrc" % seed)
        if os.path.exists(out) and not self.args.force:
            return np.array(read_mrc(out)[0], dtype=np.float32)
        gm = self.load(seed, "grandmodel")
        if name == "dual":
            from dual_engine.infer import simulate

            result = simulate(
                self.dual_model(),
                self.path(seed, "grandmodel"),
                os.path.join(self.work, name),
                seed=seed,
                threads=self.args.threads,
            )
            os.replace(result["outputs"][0], out)
        elif name == "gaussian":
            rng = np.random.default_rng(seed)
            noisy = standardize(gm) + rng.normal(0, 1 / np.sqrt(snr), gm.shape)
            write_mrc(out, noisy.astype(np.float32), study.VOXEL_SIZE)
        else:
            from dual_engine.synth.acquisition import acquire

            volume = acquire(gm, study.VOXEL_SIZE, rng=np.random.default_rng(seed)).reconstruction
            write_mrc(out, volume, study.VOXEL_SIZE)
        return np.array(read_mrc(out)[0], dtype=np.float32)

    def run(self):
        self.bench.all_phantoms(SET)
        seeds = TRAIN_SEEDS + TEST_SEEDS
        tilt_range = tuple(
            self.bench.phantom_params(SET, seeds[0]).get("tilt_range", (-60.0, 60.0))
        )
        real = {s: self.load(s, "reconstruction") for s in seeds}
        snrs = []
        for s in seeds:
            nf = self.load(s, "reconstruction_noisefree")
            snrs.append(float(np.var(nf) / np.var(real[s] - nf)))
        snr = float(np.mean(snrs))
        real_spectra = {s: radial_log_spectrum(v) for s, v in real.items()}
        real_wedge = [wedge_power_ratio(real[s], tilt_range) for s in seeds]
        results = {
            "benchmark": "realism of simulated tomograms (phantoms)",
            "command": "python bench/run_realism.py " + " ".join(self.args.argv),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": study.machine(),
            "real_seeds": seeds,
            "classifier_train_seeds": TRAIN_SEEDS,
            "classifier_test_seeds": TEST_SEEDS,
            "real_snr": snr,
            "real_wedge_power_ratio": float(np.mean(real_wedge)),
            "simulators": {},
        }
        for name in self.args.simulators:
            os.makedirs(os.path.join(self.work, name), exist_ok=True)
            fake = {s: self.simulate(name, s, snr) for s in seeds}
            study.log("simulated %s" % name)
            spectrum = [
                float(np.sqrt(np.mean((radial_log_spectrum(fake[s]) - real_spectra[s]) ** 2)))
                for s in seeds
            ]
            ratios = [wedge_power_ratio(fake[s], tilt_range) for s in seeds]
            log_ratio = [abs(np.log10(f / r)) for f, r in zip(ratios, real_wedge)]
            # The AUC after a short and after a long training of the critic: how hard the
            # simulation is to tell apart, not only whether it can be.
            auc, done = {}, 0
            rng = np.random.default_rng(0)
            classifier = Classifier(seed=0)
            for steps in sorted(self.args.steps):
                classifier.fit(
                    [standardize(real[s]) for s in TRAIN_SEEDS],
                    [standardize(fake[s]) for s in TRAIN_SEEDS],
                    steps - done,
                    rng,
                )
                done = steps
                auc[str(steps)] = classifier.auc(
                    [standardize(real[s]) for s in TEST_SEEDS],
                    [standardize(fake[s]) for s in TEST_SEEDS],
                    500,
                    np.random.default_rng(1),
                )
            results["simulators"][name] = {
                "label": SIMULATORS[name],
                "spectrum_rms_log10": {
                    "mean": float(np.mean(spectrum)),
                    "std": float(np.std(spectrum, ddof=1)),
                },
                "wedge_power_ratio": {
                    "mean": float(np.mean(ratios)),
                    "std": float(np.std(ratios, ddof=1)),
                },
                "wedge_abs_log10_ratio_to_real": {
                    "mean": float(np.mean(log_ratio)),
                    "std": float(np.std(log_ratio, ddof=1)),
                },
                "classifier_auc": auc,
            }
            study.log(
                "  %s: spectrum %.3f, wedge ratio %.3f (real %.3f), AUC %s"
                % (name, np.mean(spectrum), np.mean(ratios), np.mean(real_wedge), auc)
            )
        study.save_json(os.path.join(os.path.abspath(self.args.results), "realism.json"), results)
        print(report.write_tables(os.path.abspath(self.args.results)))


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--simulators", nargs="+", choices=list(SIMULATORS), default=list(SIMULATORS))
    ap.add_argument(
        "--steps",
        type=int,
        nargs="+",
        default=[50, 200, 1500],
        help="classifier training steps at which the AUC is measured",
    )
    add_common_arguments(ap, threads=2)
    args = ap.parse_args(argv)
    args.argv = list(argv)
    return args


if __name__ == "__main__":
    import torch

    parsed = parse(sys.argv[1:])
    torch.set_num_threads(parsed.threads)
    Realism(parsed).run()
