#!/usr/bin/env python
"""Does a short DUAL training keep the particles' contrast? The same small training
(the engine tests' phantoms and network: 48x96x96 phantoms, U-Nets of width 8, 32^3
subvolumes, 120 iterations) with the contrast anchor (noisy_contrast auto, which
resolves to 'same' on these phantoms) and without it ('free', the paper's losses), on
several seeds; the held-out phantom's denoised tomogram is scored by its Pearson
correlation with the grand model (the raw tomogram's is the reference; a negative value
is an inverted output).

    python bench/run_polarity.py --threads 2 --seeds 0 1 2 3

Results: bench/results/polarity.json.
"""

import argparse
import datetime
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from run_benchmark import add_common_arguments  # noqa: E402

SHAPE = (48, 96, 96)


def main(args):
    import study
    from dual_engine.contract import DualConfig
    from dual_engine.infer import denoise
    from dual_engine.io import read_mrc
    from dual_engine.metrics import pearson
    from dual_engine.synth.phantom import make_phantom
    from dual_engine.train import train

    work = os.path.join(os.path.abspath(args.work), "polarity")
    for seed in range(5):  # noisy 0-1, clean 2-3, held out 4
        folder = os.path.join(work, "phantoms", str(seed))
        if not os.path.exists(os.path.join(folder, "grandmodel.mrc")):
            make_phantom(folder, shape=SHAPE, seed=seed)
    phantom = os.path.join(work, "phantoms", "%d", "%s.mrc")
    noisy = [phantom % (s, "reconstruction") for s in (0, 1)]
    clean = [phantom % (s, "grandmodel") for s in (2, 3)]
    truth = read_mrc(phantom % (4, "grandmodel"))[0]
    runs = {"raw": pearson(truth, read_mrc(phantom % (4, "reconstruction"))[0])}
    for contrast in ("auto", "free"):
        for seed in args.seeds:
            cfg = DualConfig(
                subvolume_size=32,
                unet_width=8,
                code_size=8,
                noise_width=8,
                disc_width=8,
                batch_size=4,
                iterations=args.iterations,
                log_every=40,
                checkpoint_every=1000,
                seed=seed,
                noisy_contrast=contrast,
            )
            outdir = os.path.join(work, "%s_seed%d" % (contrast, seed))
            train(noisy, clean, outdir, cfg, threads=args.threads, overwrite=True)
            output = os.path.join(outdir, "denoised.mrc")
            if os.path.exists(output):
                os.remove(output)
            denoise(
                os.path.join(outdir, "model.pt"),
                phantom % (4, "reconstruction"),
                output,
                threads=args.threads,
            )
            runs["%s_seed%d" % (contrast, seed)] = round(pearson(truth, read_mrc(output)[0]), 4)
            study.log(
                "%s seed %d: Pearson %.3f" % (contrast, seed, runs["%s_seed%d" % (contrast, seed)])
            )
    study.save_json(
        os.path.join(os.path.abspath(args.results), "polarity.json"),
        {
            "benchmark": "contrast of a short training's output: anchor (auto) vs free",
            "command": "python bench/run_polarity.py " + " ".join(args.argv),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": study.machine(),
            "iterations": args.iterations,
            "pearson_with_grand_model": runs,
        },
    )


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--iterations", type=int, default=120)
    add_common_arguments(ap, threads=2)
    args = ap.parse_args(argv)
    args.argv = argv
    return args


if __name__ == "__main__":
    main(parse(sys.argv[1:]))
