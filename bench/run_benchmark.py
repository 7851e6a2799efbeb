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

Code: study.py (the sets, phantoms, scores and results files), methods.py (how each
method is tuned, trained and run), report.py (tables.rst); this file is the command line.
"""

import argparse
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch: stay on one core
os.environ.setdefault("MKL_NUM_THREADS", "1")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # the bench modules, also when run with `python -P`

import methods  # noqa: E402
import report  # noqa: E402
import study  # noqa: E402


def add_common_arguments(ap, threads):
    """Options every bench script shares."""
    ap.add_argument(
        "--threads", type=int, default=threads, help="torch threads (default %d)" % threads
    )
    ap.add_argument("--work", default=os.path.join(HERE, "work"))
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    ap.add_argument("--force", action="store_true", help="recompute cached intermediates")


def parse(argv):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--methods",
        nargs="+",
        choices=methods.ORDER,
        default=None,
        help="methods to run (default: all; DUAL unless --no-dual)",
    )
    ap.add_argument("--no-dual", action="store_true", help="skip DUAL")
    ap.add_argument("--sets", nargs="+", choices=study.TABLE_SETS, default=list(study.TABLE_SETS))
    ap.add_argument(
        "--dual-config",
        default=methods.DUAL_CONFIG,
        help="JSON of DualConfig fields for DUAL (default bench/dual_config.json)",
    )
    ap.add_argument(
        "--dual-iterations",
        type=int,
        default=None,
        help="override the config's iterations (the most DUAL may train)",
    )
    ap.add_argument(
        "--dual-select-every",
        type=int,
        default=100,
        help="score a DUAL snapshot on the tuning tomogram every N iterations "
        "and keep the best (default 100)",
    )
    ap.add_argument(
        "--supervised-minutes",
        type=float,
        default=10.0,
        help="wall-time budget of the supervised U-Net, per set (default 10)",
    )
    ap.add_argument(
        "--pick-contrast",
        type=float,
        default=None,
        help="override the picking set's contrast_volts (default 0.15)",
    )
    ap.add_argument(
        "--shape", type=int, nargs=3, default=list(study.SHAPE), metavar=("Z", "Y", "X")
    )
    add_common_arguments(ap, threads=1)
    ap.add_argument(
        "--tables-only",
        action="store_true",
        help="only rewrite tables.rst from the results JSON files",
    )
    args = ap.parse_args(argv)
    if args.methods is None:
        args.methods = list(methods.ORDER)
    if args.no_dual and "dual" in args.methods:
        args.methods.remove("dual")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    if args.tables_only:
        print(report.write_tables(os.path.abspath(args.results)))
        return
    bench = study.Bench(
        args.work,
        args.results,
        shape=args.shape,
        pick_contrast=args.pick_contrast,
        force=args.force,
    )
    runner = methods.Methods(
        bench,
        dual_cfg=methods.dual_config(args.dual_config, args.dual_iterations),
        threads=args.threads,
        select_every=args.dual_select_every,
        supervised_minutes=args.supervised_minutes,
    )
    runner.run(args.sets, args.methods, command="python bench/run_benchmark.py " + " ".join(argv))
    report.write_tables(bench.results)


if __name__ == "__main__":
    main()
