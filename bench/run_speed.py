#!/usr/bin/env python
"""Denoising a 200x512x512 tomogram: DUAL against Topaz-3D's pretrained model, side by
side on this machine (wall time and peak memory of each run in its own process).

    python bench/run_speed.py --threads 2          # after run_benchmark.py trained DUAL
    python bench/run_speed.py --model path/to/model.pt --repeats 2

Input: a 200x512x512 float32 volume at 10 A (Gaussian noise, seed 0: the cost of both
networks does not depend on the content), written once to bench/work/speed/.
DUAL: dual_engine.infer.denoise with the model chosen by the denoising benchmark
(bench/work/dual/denoise), default tile (160) and any other tile sizes given.
Topaz: topaz.denoise.Denoise3D (unet-3d-10a) with its command line's defaults (96^3
patches, 48 voxels of padding, batch 1), as `topaz denoise3d` runs it.
Each run is a fresh `python` process with the same torch thread count; the parent
times it and reads its peak resident memory (ru_maxrss). With --timeout a run still
going is stopped and its time recorded as a lower bound ("finished": false). Runs
alternate between the methods when --repeats > 1. Results: bench/results/speed.json and tables.rst.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

SHAPE = (200, 512, 512)
VOXEL_SIZE = 10.0


def child(args):
    """Denoise the input in this process (called by the parent in a subprocess)."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    if args.method == "dual":
        from dual_engine.infer import denoise

        denoise(
            args.model, args.input, args.output, tile=args.tile, device="cpu", threads=args.threads
        )
    else:
        from dual_engine.io import read_mrc, write_mrc
        from topaz.denoise import Denoise3D

        model = Denoise3D("unet-3d-10a", use_cuda=False, dims=3)
        volume = np.array(read_mrc(args.input)[0], dtype=np.float32)
        out = model.denoise(volume, patch_size=96, padding=48, batch_size=1, verbose=False)
        write_mrc(args.output, out, VOXEL_SIZE)


def run_child(argv, timeout=None, script=None):
    """(wall seconds, peak RSS in GB, finished) of one child process (`script`, default
    this one, run with --child and argv); a child still running after `timeout` seconds
    is stopped (its time is then a lower bound)."""
    t0 = time.perf_counter()
    script = os.path.abspath(script or __file__)
    proc = subprocess.Popen([sys.executable, script, "--child"] + argv)
    finished = True
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if timeout and time.perf_counter() - t0 > timeout:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            finished = False
            break
        time.sleep(0.5)
    seconds = time.perf_counter() - t0
    if finished and status != 0:
        raise SystemExit("child failed: %s" % " ".join(argv))
    return seconds, usage.ru_maxrss / 1024.0**2, finished  # KB -> GB (Linux)


def main(args):
    import numpy as np
    import methods
    import report
    import study
    from dual_engine.io import write_mrc

    work = os.path.join(os.path.abspath(args.work), "speed")
    os.makedirs(work, exist_ok=True)
    volume_path = os.path.join(work, "input_200x512x512.mrc")
    if not os.path.exists(volume_path):
        rng = np.random.default_rng(0)
        write_mrc(volume_path, rng.standard_normal(SHAPE, dtype=np.float32), VOXEL_SIZE)
    model = args.model
    if model is None:
        record = study.load_json(
            os.path.join(os.path.abspath(args.work), "dual", "denoise", "bench_training.json")
        )
        if not record or "chosen_iteration" not in record:
            raise SystemExit(
                "no DUAL model: run bench/run_benchmark.py --methods dual first, or give --model"
            )
        model = methods.snapshot_path(
            os.path.join(os.path.abspath(args.work), "dual", "denoise"), record["chosen_iteration"]
        )
    runs = {"topaz": [], **{"dual_tile%d" % t: [] for t in args.tiles}}
    for repeat in range(args.repeats):
        for name in runs:
            argv = [
                "--method",
                "topaz" if name == "topaz" else "dual",
                "--input",
                volume_path,
                "--output",
                os.path.join(work, name + ".mrc"),
                "--threads",
                str(args.threads),
                "--model",
                model,
            ]
            if name != "topaz":
                argv += ["--tile", name.split("tile")[1]]
            seconds, gigabytes, finished = run_child(argv, args.timeout)
            runs[name].append(
                {"seconds": round(seconds, 1), "peak_gb": round(gigabytes, 2), "finished": finished}
            )
            study.log(
                "%s run %d: %.1f s%s, peak %.2f GB"
                % (name, repeat + 1, seconds, "" if finished else " (stopped)", gigabytes)
            )
    topaz_best = min(r["seconds"] for r in runs["topaz"])
    result = {
        "benchmark": "denoising time and peak memory, 200x512x512 voxels",
        "command": "python bench/run_speed.py " + " ".join(args.argv),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": study.machine(),
        "threads": args.threads,
        "model": model,
        "runs": runs,
        # a stopped Topaz run makes its time, and so every ratio, a lower bound
        "ratio_is_lower_bound": not all(r["finished"] for r in runs["topaz"]),
        "ratio_topaz_over_dual": {
            name: round(topaz_best / min(r["seconds"] for r in rr), 2)
            for name, rr in runs.items()
            if name != "topaz"
        },
    }
    study.save_json(os.path.join(os.path.abspath(args.results), "speed.json"), result)
    print(json.dumps(result["ratio_topaz_over_dual"]))
    print(report.write_tables(os.path.abspath(args.results)))


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--method", choices=["dual", "topaz"], help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--output", help=argparse.SUPPRESS)
    ap.add_argument("--tile", type=int, default=96, help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None, help="DUAL model (default: the benchmark's)")
    ap.add_argument(
        "--tiles",
        type=int,
        nargs="+",
        default=[160],
        help="DUAL tile sizes to time (default: 160, the engine's default)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="stop a run after this many seconds; its time is then a lower "
        "bound (recorded as not finished)",
    )
    ap.add_argument("--work", default=os.path.join(HERE, "work"))
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    args.argv = [a for a in argv]
    return args


if __name__ == "__main__":
    parsed = parse(sys.argv[1:])
    (child if parsed.child else main)(parsed)  # --child: one measured run
