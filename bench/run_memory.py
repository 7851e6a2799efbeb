#!/usr/bin/env python
"""Peak memory of `dual-engine denoise` against the volume's size: two volumes 8x apart
in voxels, the same tile, each run in its own process (peak resident memory, ru_maxrss),
streamed (the engine's path) and, for comparison, the whole-volume in-memory pipeline
(infer.denoise_on_input_grid + write_mrc, what denoise did before streaming).

    python bench/run_memory.py --threads 2                    # default sizes and network
    python bench/run_memory.py --unet-width 4 --network-share # a narrower network, and
                                                              # one tile of the default's

The model is freshly initialised (its weights do not change the cost) with the given
U-Net width (default: the engine's default network); with --network-share and another
width, one tile of the default network is measured too and the large volume's peak with
the default network computed from it. Inputs: Gaussian noise at 10 A in
bench/work/memory/. Results: bench/results/memory.json.
"""

import argparse
import contextlib
import datetime
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import run_speed  # noqa: E402  (run_child: one process per run, peak RSS)
from dual_engine.contract import DualConfig  # noqa: E402
from run_benchmark import add_common_arguments  # noqa: E402

VOXEL_SIZE = 10.0
DEFAULT_WIDTH = DualConfig().unet_width  # the engine's default network


def child(args):
    """One denoising run in this process (the parent measures it)."""
    import torch

    torch.set_num_threads(args.threads)
    if args.pipeline == "streamed":
        from dual_engine.infer import denoise

        denoise(args.model, args.input, args.output, tile=args.tile, threads=args.threads)
    else:
        from dual_engine.infer import denoise_on_input_grid, load_network
        from dual_engine.io import write_mrc

        cfg, generators, device = load_network(args.model, "cpu", args.threads)
        volume, voxel_size = denoise_on_input_grid(cfg, generators, args.input, args.tile)
        write_mrc(args.output, volume, voxel_size)


def make_model(path, width):
    import torch
    from dual_engine.contract import DualConfig
    from dual_engine.model import MODEL_FORMAT, build

    cfg = DualConfig(unet_width=width)
    generators, _ = build(cfg)
    torch.save(
        {
            "format": MODEL_FORMAT,
            "config": cfg.to_dict(),
            "iteration": 0,
            "generators": generators.state_dict(),
        },
        path,
    )


def make_volume(path, shape):
    """Gaussian noise written slab by slab (never the whole volume in memory)."""
    import numpy as np
    from dual_engine.streaming import new_volume, slabs

    rng = np.random.default_rng(0)
    with new_volume(path, shape, VOXEL_SIZE) as out:
        for a, b in slabs(shape):
            out[a:b] = rng.standard_normal((b - a,) + tuple(shape[1:]), dtype=np.float32)


def run(args, name, pipeline, model, volume, tile):
    output = os.path.join(args.workdir, "%s_%s.mrc" % (name, pipeline))
    if os.path.exists(output):
        os.remove(output)
    argv = [
        "--pipeline",
        pipeline,
        "--model",
        model,
        "--input",
        volume,
        "--output",
        output,
        "--tile",
        str(tile),
        "--threads",
        str(args.threads),
    ]
    seconds, gigabytes, finished = run_speed.run_child(argv, args.timeout, script=__file__)
    with contextlib.suppress(FileNotFoundError):
        os.remove(output)
    print(
        "%s %s tile %d: %.1f s, peak %.2f GB%s"
        % (name, pipeline, tile, seconds, gigabytes, "" if finished else " (stopped)"),
        flush=True,
    )
    return {"seconds": round(seconds, 1), "peak_gb": round(gigabytes, 3), "finished": finished}


def main(args):
    import study

    args.workdir = os.path.join(os.path.abspath(args.work), "memory")
    os.makedirs(args.workdir, exist_ok=True)
    model = os.path.join(args.workdir, "model_width%d.pt" % args.unet_width)
    make_model(model, args.unet_width)
    results = {}
    for size in args.sizes:
        shape = tuple(int(n) for n in size.split("x"))
        volume = os.path.join(args.workdir, "input_%s.mrc" % size)
        if not os.path.exists(volume):
            make_volume(volume, shape)
        results[size] = {
            "voxels": int(shape[0] * shape[1] * shape[2]),
            "streamed": run(args, size, "streamed", model, volume, args.tile),
        }
        if size in args.in_memory:
            results[size]["in_memory"] = run(args, size, "in_memory", model, volume, args.tile)
    share = None
    if args.network_share:
        # One tile of the default network: its share of any run at this tile size.
        wide = os.path.join(args.workdir, "model_width%d.pt" % DEFAULT_WIDTH)
        make_model(wide, DEFAULT_WIDTH)
        shape = (args.tile,) * 3
        volume = os.path.join(args.workdir, "input_tile.mrc")
        if not os.path.exists(volume):
            make_volume(volume, shape)
        share = {
            "default_width_one_tile": run(args, "tile", "streamed", wide, volume, args.tile),
            "width%d_one_tile" % args.unet_width: run(
                args, "tile", "streamed", model, volume, args.tile
            ),
        }
    small, large = args.sizes[0], args.sizes[-1]
    record = {
        "benchmark": "peak memory of denoise against volume size (same tile)",
        "command": "python bench/run_memory.py " + " ".join(args.argv),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": study.machine(),
        "threads": args.threads,
        "unet_width": args.unet_width,
        "tile": args.tile,
        "runs": results,
        "network_share": share,
        "ratio_large_over_small_streamed": round(
            results[large]["streamed"]["peak_gb"] / results[small]["streamed"]["peak_gb"], 3
        ),
    }
    if share:
        # The large volume with the default network, computed: the run measured at this
        # width, with the default network's one-tile peak in place of this width's.
        wide, narrow = share["default_width_one_tile"], share["width%d_one_tile" % args.unet_width]
        record["large_default_width_peak_gb_computed"] = round(
            results[large]["streamed"]["peak_gb"] - narrow["peak_gb"] + wide["peak_gb"], 3
        )
    study.save_json(os.path.join(os.path.abspath(args.results), "memory.json"), record)
    print(json.dumps({k: v for k, v in record.items() if k not in ("machine", "runs")}, indent=1))


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--pipeline", choices=["streamed", "in_memory"], help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--output", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument(
        "--sizes",
        nargs="+",
        default=["100x512x512", "200x1024x1024"],
        help="ZxYxX volume sizes, smallest first (default: 8x apart)",
    )
    ap.add_argument(
        "--in-memory",
        nargs="*",
        default=["100x512x512"],
        help="sizes also run through the in-memory pipeline",
    )
    ap.add_argument("--tile", type=int, default=160)
    ap.add_argument("--unet-width", type=int, default=DEFAULT_WIDTH)
    ap.add_argument(
        "--network-share",
        action="store_true",
        help="also measure one tile of the default network (width %d)" % DEFAULT_WIDTH,
    )
    ap.add_argument(
        "--timeout", type=float, default=None, help="stop a run after this many seconds"
    )
    add_common_arguments(ap, threads=2)
    args = ap.parse_args(argv)
    args.argv = argv
    return args


if __name__ == "__main__":
    parsed = parse(sys.argv[1:])
    (child if parsed.child else main)(parsed)  # --child: one measured run
