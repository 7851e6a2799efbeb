#!/usr/bin/env python
"""DUAL training: what one iteration costs on this machine, and the quality a run's
final model reaches without choosing anything by ground truth.

    python bench/run_training.py cost --threads 2        # FLOPs, s/iteration, conv3d peak, threads
    python bench/run_training.py quality --seeds 0 1 2   # the engine's defaults, 3 seeds
    python bench/run_training.py quality --variant paper --seeds 0
    python bench/run_training.py report                  # the quality runs as a table

cost: one training iteration per configuration (side by side, each in its own process,
the same thread count): FLOPs (torch.utils.flop_counter around Trainer.step()), median
seconds per iteration, GFLOP/s and their fraction of this machine's conv3d peak (a
64->64 channel 3x3x3 convolution on 4x32^3 voxels, forward + backward, measured in the
same run). Then the thread test: the default configuration with 1 and 2 threads, and
with the engine's default thread count (dual_engine.cpus.default_threads), while one
other process keeps a core busy (a shared node, a second Scipion protocol).

quality: the benchmark's denoise set (bench/study.py: noisy domain = reconstructions of
phantoms 0-3, clean domain = grand models of 4-7, tuning tomogram 9, test tomograms 8,
10, 11; 64x256x256 at 10 A). One training per seed, a snapshot every tenth of the run;
every snapshot is scored on the tuning tomogram (SSIM/PSNR against its grand model) and
its ground-truth-free signals (dual_engine.monitor, from the training log) are compared
with that SSIM (Spearman); the final model is scored on the test tomograms, with the
weights it uses (the moving average) and with the last weights. Nothing is chosen by
ground truth: the final model is the user's model.

Variants: default (the engine's DualConfig defaults) and paper (the configuration before
this benchmark: width-16 U-Nets, constant AdamW learning rate 1e-4 with betas 0.9/0.999
for all networks, last weights, learned noise scale, no spectrum loss, 1200 iterations).
Results: bench/results/training.json (parts and variants updated in place).
"""

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import study  # noqa: E402
from dual_engine.contract import LEGACY_MODEL_SETTINGS  # noqa: E402

# What a run recorded before an option existed ran with: what old model files are read
# with (the paper's behaviour), and the discriminators at the generators' rate.
BEFORE_OPTION = dict(LEGACY_MODEL_SETTINGS, disc_lr_factor=1.0)
VARIANTS = {
    "default": {},
    # the options this benchmark added or changed, as they were before it (BEFORE_OPTION)
    "paper": dict(
        BEFORE_OPTION,
        unet_width=16,
        lr=1e-4,
        betas=(0.9, 0.999),
        lr_decay=0.0,
        weight_average=0.0,
        iterations=1200,
    ),
}
# cost: configurations timed side by side (DualConfig changes, memory format); the
# earlier ones pinned to the transposed upsampling they had
TRANSPOSED = dict(upsampling="transposed")
COST_CONFIGS = {
    # this benchmark's starting point: width 16, contiguous tensors, Dn run twice
    "session_start": (dict(TRANSPOSED, unet_width=16), "two_denoiser_passes"),
    "width16_contiguous": (dict(TRANSPOSED, unet_width=16), "contiguous"),
    "width16_channels_last": (dict(TRANSPOSED, unet_width=16), "channels_last"),
    "width8_contiguous": (dict(TRANSPOSED, unet_width=8), "contiguous"),
    "width8_channels_last": (dict(TRANSPOSED, unet_width=8), "channels_last"),
    "upsampling_linear_simulator": (dict(upsampling="linear-simulator"), "engine"),
    "upsampling_linear": (dict(upsampling="linear"), "engine"),
    "default": ({}, "engine"),
}
PEAK_SHAPE = (4, 64, 32, 32, 32)  # batch, channels, voxels of the conv3d peak
SNAPSHOTS = 10  # per training run


# ------------------------------------------------------------------ children (cost)
class RandomDomain:
    """Subvolumes of Gaussian noise: the cost of an iteration does not depend on them."""

    def __init__(self, size):
        self.size = size

    def sample(self, rng, count):
        s = self.size
        return rng.standard_normal((count, 1, s, s, s), dtype="float32")


def forward_two_denoiser_passes(self, noisy, clean, z, generator=None):
    """DualGenerators.forward as it was before Dn's two inputs were batched."""
    fake_noisy = self.simulate(clean, z, generator)
    rec_clean = self.denoiser(fake_noisy)
    fake_clean = self.denoiser(noisy)
    code = self.noise_encoder(noisy)
    rec_noisy = self.structural_generator(fake_clean + self.noise_decoder(code))
    return {
        "fake_noisy": fake_noisy,
        "rec_clean": rec_clean,
        "fake_clean": fake_clean,
        "rec_noisy": rec_noisy,
        "code": code,
    }


def measure_step(changes, memory_format, steps):
    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from dual_engine.contract import DualConfig
    from dual_engine.train import Trainer

    cfg = DualConfig(**dict(changes, noisy_contrast="same"))
    trainer = Trainer(cfg, RandomDomain(cfg.subvolume_size), RandomDomain(cfg.subvolume_size))
    if memory_format == "two_denoiser_passes":
        import types

        trainer.generators.forward = types.MethodType(
            forward_two_denoiser_passes, trainer.generators
        )
        memory_format = "contiguous"
    if memory_format != "engine":
        trainer.memory_format = {
            "contiguous": torch.contiguous_format,
            "channels_last": torch.channels_last_3d,
        }[memory_format]
        trainer.generators.to(memory_format=trainer.memory_format)
        trainer.discriminators.to(memory_format=trainer.memory_format)
    with FlopCounterMode(display=False) as counter:
        trainer.step()
    trainer.step()  # warm-up
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        trainer.step()
        times.append(time.perf_counter() - t0)
    return {
        "gflop": round(counter.get_total_flops() / 1e9, 2),
        "seconds_per_iteration": round(float(np.median(times)), 3),
        "memory_format": str(trainer.memory_format).replace("torch.", ""),
    }


def measure_peak(repeats=5):
    """GFLOP/s of the best-shaped conv3d here (forward + backward), both layouts."""
    import torch

    best = {}
    for layout in ("contiguous_format", "channels_last_3d"):
        fmt = getattr(torch, layout)
        conv = torch.nn.Conv3d(PEAK_SHAPE[1], PEAK_SHAPE[1], 3, padding=1).to(memory_format=fmt)
        x = torch.randn(PEAK_SHAPE).contiguous(memory_format=fmt).requires_grad_(True)
        voxels = PEAK_SHAPE[0] * PEAK_SHAPE[2] * PEAK_SHAPE[3] * PEAK_SHAPE[4]
        flop = 3 * 2 * 27 * PEAK_SHAPE[1] ** 2 * voxels  # forward, input and weight gradients
        conv(x).sum().backward()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            conv(x).sum().backward()
            times.append(time.perf_counter() - t0)
        best[layout] = round(flop / min(times) / 1e9, 1)
    return {"gflops_per_second": best, "peak": max(best.values())}


def child(args):
    import torch

    from dual_engine.cpus import default_threads

    # --threads 0: the engine's default (the CPUs no other process keeps busy)
    torch.set_num_threads(args.threads or default_threads())
    if args.peak:
        result = measure_peak()
    else:
        changes, memory_format = json.loads(args.config)
        result = measure_step(changes, memory_format, args.steps)
    result["threads"] = torch.get_num_threads()
    print("RESULT " + json.dumps(result), flush=True)


def run_child(argv, env=None):
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "child"] + argv,
        capture_output=True,
        text=True,
        env=dict(os.environ, **(env or {})),
        check=True,
    ).stdout
    return json.loads(out.split("RESULT ", 1)[1])


# ------------------------------------------------------------------ cost
def cost(args):
    threads = ["--threads", str(args.threads)]
    peak = run_child(["--peak"] + threads)
    study.log("conv3d peak: %s GFLOP/s" % peak["gflops_per_second"])
    configs = {}
    for name, config in COST_CONFIGS.items():
        r = run_child(["--config", json.dumps(config), "--steps", str(args.steps)] + threads)
        r["gflops_per_second"] = round(r["gflop"] / r["seconds_per_iteration"], 1)
        r["fraction_of_peak"] = round(r["gflops_per_second"] / peak["peak"], 3)
        configs[name] = r
        study.log("%s: %s" % (name, r))
    # The thread test: one other process keeps a core busy.
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)
        shared = {}
        for n in (1, 2, 0):  # 0: the engine's default
            argv = ["--config", json.dumps(COST_CONFIGS["default"]), "--steps", str(args.steps)]
            r = run_child(argv + ["--threads", str(n)])
            name = "threads%d" % n if n else "engine_default"
            shared[name] = r["seconds_per_iteration"]
            if not n:
                shared["engine_default_threads"] = r["threads"]
            study.log("beside a busy process, %s: %s" % (name, r))
    finally:
        busy.kill()
    shared["ratio_2_over_1"] = round(shared["threads2"] / shared["threads1"], 2)
    shared["ratio_default_over_1"] = round(shared["engine_default"] / shared["threads1"], 2)
    update(
        args,
        "cost",
        {
            "command": "python bench/run_training.py " + " ".join(args.argv),
            "date": now(),
            "machine": study.machine(),
            "threads": args.threads,
            "conv3d_peak": peak,
            "configs": configs,
            "beside_one_busy_process": shared,
        },
    )


# ------------------------------------------------------------------ quality
def quality(args):
    import numpy as np
    from scipy.stats import spearmanr

    from dual_engine import metrics
    from dual_engine.contract import (
        MODEL_FILE,
        SNAPSHOT_DIR,
        TRAINING_LOG,
        DualConfig,
        snapshot_name,
    )
    from dual_engine.infer import denoise
    from dual_engine.io import read_mrc, standardize
    from dual_engine.train import train

    bench = study.Bench(args.work, args.results)
    bench.all_phantoms("denoise")
    s = study.SETS["denoise"]
    noisy = [
        os.path.join(bench.phantom_dir("denoise", k), "reconstruction.mrc") for k in s["noisy"]
    ]
    clean = [os.path.join(bench.phantom_dir("denoise", k), "grandmodel.mrc") for k in s["clean"]]

    def score(model, seed, outdir):
        out = os.path.join(outdir, "scored.mrc")
        if os.path.exists(out):
            os.remove(out)
        path = os.path.join(bench.phantom_dir("denoise", seed), "reconstruction.mrc")
        denoise(model, path, out, device="cpu", threads=args.threads)
        volume = standardize(np.array(read_mrc(out)[0]))
        gm = bench.volume("denoise", seed, "grandmodel")
        return {"ssim_gm": metrics.ssim(gm, volume), "psnr_gm": metrics.psnr(gm, volume)}

    def mean_scores(model, outdir):
        rows = [score(model, seed, outdir) for seed in s["test"]]
        return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}

    variant = dict(VARIANTS[args.variant], **args.set)
    name = args.variant + "".join("_%s%s" % kv for kv in sorted(args.set.items()))
    for seed in args.seeds:
        values = dict(variant, seed=seed)
        iterations = values.get("iterations", DualConfig().iterations)
        values["snapshot_every"] = max(1, iterations // SNAPSHOTS)
        cfg = DualConfig(**values)
        outdir = os.path.join(os.path.abspath(args.work), "training", "%s_seed%d" % (name, seed))
        key = study.canonical(
            {"config": cfg.to_dict(), "phantoms": bench.phantom_params("denoise", 0)}
        )
        record_path = os.path.join(outdir, "bench_record.json")
        record = study.load_json(record_path)
        if not record or record.get("key") != key or args.force:
            if os.path.isdir(outdir):
                shutil.rmtree(outdir)
            study.log("training %s seed %d (%d iterations)" % (name, seed, iterations))
            t0 = time.perf_counter()
            train(noisy, clean, outdir, cfg, device="cpu", threads=args.threads)
            record = {"key": key, "train_seconds": round(time.perf_counter() - t0, 1)}
            study.save_json(record_path, record)
        with open(os.path.join(outdir, TRAINING_LOG)) as f:
            log = {r["iteration"]: r for r in map(json.loads, f)}
        snapshots = []
        for it in range(cfg.snapshot_every, iterations + 1, cfg.snapshot_every):
            row = {"iteration": it}
            row.update(
                score(os.path.join(outdir, SNAPSHOT_DIR, snapshot_name(it)), s["tune"], outdir)
            )
            row.update({k: log[it][k] for k in log[it] if k.startswith("monitor_")})
            snapshots.append(row)
            study.log("  seed %d iteration %d: %s" % (seed, it, row))
        final = mean_scores(os.path.join(outdir, MODEL_FILE), outdir)
        # The same run's last weights (what the model held before it kept an average).
        last_path = os.path.join(outdir, "last_weights.pt")
        if cfg.weight_average > 0:
            import torch

            state = torch.load(os.path.join(outdir, MODEL_FILE), weights_only=True)
            state["generators_average"] = None
            torch.save(state, last_path)
            final_last = mean_scores(last_path, outdir)
        else:
            final_last = final
        ssims = [r["ssim_gm"] for r in snapshots]
        run = {
            "train_seconds": record["train_seconds"],
            "iterations": iterations,
            "final_test": final,
            "final_test_last_weights": final_last,
            "final_tune_ssim": ssims[-1],
            "best_snapshot_tune_ssim": max(ssims),
            "best_snapshot_iteration": snapshots[int(np.argmax(ssims))]["iteration"],
            "last5_tune_ssim_spread": round(max(ssims[-5:]) - min(ssims[-5:]), 4),
            "snapshots": snapshots,
            "spearman_with_tune_ssim": {
                k: round(float(spearmanr([-r[k] for r in snapshots], ssims)[0]), 3)
                for k in snapshots[0]
                if k.startswith("monitor_")
            },
        }
        study.log("seed %d: %s" % (seed, {k: v for k, v in run.items() if k != "snapshots"}))
        # Saved after each seed, so an interrupted series keeps what it measured.
        results = study.load_json(os.path.join(args.results, "training.json"), {})
        entry = results.get("quality", {}).get(name, {"runs": {}})
        entry["runs"]["seed%d" % seed] = run
        entry.update(
            {
                "command": "python bench/run_training.py " + " ".join(args.argv),
                "date": now(),
                "machine": study.machine(),
                "threads": args.threads,
                "config": DualConfig(**variant).to_dict(),
            }
        )
        update(args, "quality", dict(results.get("quality", {}), **{name: entry}))


# ------------------------------------------------------------------ report
def report(args):
    """The quality runs as an RST table (the README's), one row per variant and seed."""
    results = study.load_json(os.path.join(os.path.abspath(args.results), "training.json"), {})
    rows = []
    for name, entry in results.get("quality", {}).items():
        label = changes_label(entry["config"])
        for index, (seed, run) in enumerate(sorted(entry["runs"].items())):
            rows.append(
                [
                    "" if index else label,
                    seed[4:],
                    "%.3f / %.2f" % (run["final_test"]["ssim_gm"], run["final_test"]["psnr_gm"]),
                    "%.3f" % run["final_test_last_weights"]["ssim_gm"],
                    "%.3f / %.3f" % (run["final_tune_ssim"], run["best_snapshot_tune_ssim"]),
                    "%.3f" % run["last5_tune_ssim_spread"],
                    "%.0f" % run["train_seconds"],
                ]
            )
    head = [
        "Configuration",
        "Seed",
        "Final model, test: SSIM / PSNR",
        "Last weights SSIM",
        "Tune SSIM final / best snapshot",
        "Last-5 spread",
        "Train s",
    ]
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    line = "  ".join("=" * w for w in widths)
    fmt = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    print("\n".join([line, fmt(head), line] + [fmt(r) for r in rows] + [line]))


# ------------------------------------------------------------------ helpers


def changes_label(config):
    """A run's configuration as its differences from today's engine defaults, in
    DualConfig's names (the names --set takes); "defaults" when there are none."""
    from dual_engine.contract import DualConfig

    defaults = DualConfig().to_dict()

    def shown(value):
        if isinstance(value, (list, tuple)):
            return ",".join(shown(v) for v in value)
        return "%g" % value if isinstance(value, float) else json.dumps(value)

    changed = [
        "%s %s" % (key, shown(config.get(key, BEFORE_OPTION.get(key, value))))
        for key, value in defaults.items()
        if config.get(key, BEFORE_OPTION.get(key, value)) != value
    ]
    return ", ".join(changed) or "defaults"


def now():
    return datetime.datetime.now().isoformat(timespec="seconds")


def update(args, part, value):
    path = os.path.join(os.path.abspath(args.results), "training.json")
    results = study.load_json(path, {})
    results[part] = value
    study.save_json(path, results)


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("part", choices=["cost", "quality", "report", "child"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5, help="timed iterations per configuration")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variant", choices=list(VARIANTS), default="default")
    ap.add_argument("--force", action="store_true", help="train again")
    ap.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="DualConfig changes on top of the variant (JSON values), recorded under "
        "the variant's name with them appended",
    )
    ap.add_argument("--peak", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--work", default=os.path.join(HERE, "work"))
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    args.argv = list(argv)
    args.set = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    return args


if __name__ == "__main__":
    parsed = parse(sys.argv[1:])
    {"cost": cost, "quality": quality, "report": report, "child": child}[parsed.part](parsed)
