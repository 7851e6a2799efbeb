"""`dual-engine COMMAND ...`: the one command line of the engine.

Every command also takes `--job FILE.json`: a JSON object whose keys are the command's
option names (dest names, e.g. "voxel_size"); values given on the command line win.
Handlers import their modules lazily so that `phantom` or `evaluate` never pay for torch.
"""
import argparse
import json
import os
import sys

from dual_engine import __version__
from dual_engine.io import InputError


def _phantom(args):
    from dual_engine.synth.phantom import make_phantom
    summary = make_phantom(
        args.outdir, shape=tuple(args.shape), voxel_size=args.voxel_size, seed=args.seed,
        tilt_range=tuple(args.tilt_range), tilt_step=args.tilt_step,
        defocus_um=args.defocus, dose=args.dose, voltage_kv=args.voltage, cs_mm=args.cs,
        amplitude_contrast=args.amplitude_contrast, classes=args.classes,
        n_particles=args.particles, write_noise_free=args.noise_free,
        n_vesicles=args.vesicles, n_fiducials=args.fiducials,
        defocus_jitter_um=args.defocus_jitter, contrast_volts=args.contrast_volts)
    print(json.dumps(summary, indent=1))


def _evaluate_volumes(args):
    from dual_engine.metrics import evaluate_volumes
    rows = evaluate_volumes(args.reference, args.volumes, ssim_window=args.ssim_window)
    print(json.dumps(rows, indent=1))


def _evaluate_picks(args):
    from dual_engine.metrics import evaluate_picks
    result = evaluate_picks(args.picks, args.truth, voxel_size=args.voxel_size,
                            distance=args.distance, occupancy=args.occupancy,
                            exclude=args.exclude)
    print(json.dumps(result, indent=1))


def _pick(args):
    from dual_engine.pick import pick_file
    summary = pick_file(args.tomogram, args.outdir, args.diameter, top=args.top,
                        threshold=args.threshold, min_distance=args.min_distance,
                        polarity=args.polarity, mask=args.mask, margin=args.margin,
                        voxel_size=args.voxel_size, tomo_name=args.tomo_name,
                        formats=tuple(args.formats), tomo_index=args.tomo_index,
                        workers=args.threads)
    print(json.dumps(summary, indent=1))


def _config_from_args(args):
    from dual_engine.model import DualConfig
    overrides = {name: getattr(args, name) for name in list(_CONFIG_OPTIONS) + ['tilt_axis']
                 if getattr(args, name, None) is not None}
    return DualConfig(**overrides)


def _train(args):
    from dual_engine.train import train
    summary = train(args.noisy, args.clean, args.outdir, _config_from_args(args),
                    resume=args.resume, init_model=args.init_model, device=args.device,
                    threads=args.threads, processes=args.processes,
                    noisy_voxel_size=args.noisy_voxel_size,
                    clean_voxel_size=args.clean_voxel_size)
    print(json.dumps(summary, indent=1))


def _wedge_train(args):
    from dual_engine.train import train
    from dual_engine.wedge import wedge_config
    cfg = wedge_config(_config_from_args(args), args.tomograms, args.tilt_range,
                       args.tilt_axis)
    summary = train(args.tomograms, args.tomograms, args.outdir, cfg, resume=args.resume,
                    init_model=args.init_model, device=args.device, threads=args.threads,
                    processes=args.processes, noisy_voxel_size=args.input_voxel_size,
                    clean_voxel_size=args.input_voxel_size)
    print(json.dumps(summary, indent=1))


def _wedge(args):
    from dual_engine.wedge import compensate
    for path in args.inputs:
        result = compensate(args.model, path, _output_path(args.outdir, path, args.suffix),
                            tilt_range=args.tilt_range, tilt_axis=args.tilt_axis,
                            transition=args.transition, tile=args.tile, overlap=args.overlap,
                            device=args.device, threads=args.threads,
                            voxel_size=args.voxel_size)
        print(json.dumps(result), flush=True)


def _output_path(outdir, input_path, suffix):
    stem = os.path.splitext(os.path.basename(input_path))[0]
    return os.path.join(outdir, stem + suffix + '.mrc')


def _denoise(args):
    from dual_engine.infer import denoise
    for path in args.inputs:
        result = denoise(args.model, path, _output_path(args.outdir, path, args.suffix),
                         tile=args.tile, overlap=args.overlap, device=args.device,
                         threads=args.threads, voxel_size=args.voxel_size)
        print(json.dumps(result), flush=True)


def _simulate(args):
    from dual_engine.infer import simulate
    for index, path in enumerate(args.inputs):
        # Input i uses seed + 1000 i, so maps given together never share noise draws.
        result = simulate(args.model, path, args.outdir, variants=args.variants,
                          seed=args.seed + 1000 * index, tile=args.tile, overlap=args.overlap,
                          device=args.device, threads=args.threads, voxel_size=args.voxel_size)
        print(json.dumps(result), flush=True)


def _model_info(args):
    from dual_engine.model import load_model
    from dual_engine.io import atomic_output
    cfg, state = load_model(args.model)
    info = {'model': os.path.abspath(args.model), 'format': state['format'],
            'engine_version': state.get('engine_version'), 'iteration': state['iteration'],
            'config': cfg.to_dict(), 'training': state.get('training')}
    text = json.dumps(info, indent=1)
    if args.output:
        with atomic_output(args.output) as tmp, open(tmp, 'w') as f:
            f.write(text + '\n')
    print(text)


# DualConfig fields settable from the command line (defaults live in DualConfig only).
_CONFIG_OPTIONS = {
    'voxel_size': (float, 'working voxel size in A'),
    'subvolume_size': (int, 'side of the training subvolumes (multiple of 8)'),
    'iterations': (int, 'total training iterations'),
    'batch_size': (int, 'subvolumes per domain per iteration and process'),
    'unet_width': (int, 'channels of the U-Nets\' first level'),
    'unet_depth': (int, 'poolings in the U-Nets'),
    'code_size': (int, 'noise code dimension K'),
    'noise_width': (int, 'channels of the noise encoder/decoder'),
    'disc_width': (int, 'channels of the discriminators'),
    'lr': (float, 'AdamW learning rate'),
    'lambda_rec': (float, 'weight of the reconstruction loss'),
    'lambda_adv': (float, 'weight of the adversarial loss'),
    'lambda_kl': (float, 'weight of the noise-code KL loss'),
    'seed': (int, 'random seed'),
    'log_every': (int, 'iterations between log lines'),
    'checkpoint_every': (int, 'iterations between checkpoints'),
}


def _add_run_options(p):
    p.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:N (default auto)')
    p.add_argument('--threads', type=int, default=None, help='CPU threads for torch')


def _add_inference_options(p):
    p.add_argument('model', help='model file written by train (model.pt)')
    p.add_argument('inputs', nargs='+', help='MRC volumes')
    p.add_argument('--outdir', required=True)
    p.add_argument('--tile', type=int, default=160,
                   help='tile side in voxels (default 160); smaller tiles use less memory')
    p.add_argument('--overlap', type=int, default=None,
                   help='voxels dropped at each tile border (default: the receptive radius)')
    p.add_argument('--voxel-size', type=float, default=None,
                   help='voxel size of the inputs in A, if their headers are wrong')
    _add_run_options(p)


def _add_training_options(p):
    for name, (kind, text) in _CONFIG_OPTIONS.items():
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=text)
    p.add_argument("--resume", action="store_true", help="continue from OUTDIR/checkpoint.pt if present")
    p.add_argument("--init-model", default=None, help="start from this model file's weights and iteration")
    p.add_argument("--processes", type=int, default=1,
                   help="DistributedDataParallel processes (one per GPU; gloo on CPU)")
    _add_run_options(p)


def build_parser():
    parser = argparse.ArgumentParser(prog="dual-engine", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version="dual-engine %s" % __version__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = commands.add_parser("phantom", help="simulate a SHREC-2021-like tomogram with its ground truth")
    p.add_argument("outdir", help="folder for reconstruction.mrc, grandmodel.mrc, masks and particle list")
    p.add_argument("--shape", type=int, nargs=3, default=[64, 256, 256], metavar=("Z", "Y", "X"))
    p.add_argument("--voxel-size", type=float, default=10.0, help="Angstrom per voxel (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tilt-range", type=float, nargs=2, default=[-60.0, 60.0], metavar=("MIN", "MAX"))
    p.add_argument("--tilt-step", type=float, default=3.0, help="degrees between tilts (default 3)")
    p.add_argument("--defocus", type=float, default=3.0, help="defocus in micrometres, underfocus positive (default 3)")
    p.add_argument("--dose", type=float, default=100.0, help="total dose over the tilt series, e/A^2 (default 100)")
    p.add_argument("--voltage", type=float, default=300.0, help="kV (default 300)")
    p.add_argument("--cs", type=float, default=2.7, help="spherical aberration in mm (default 2.7)")
    p.add_argument("--amplitude-contrast", type=float, default=0.07)
    p.add_argument("--classes", nargs="+", default=None, help="macromolecule classes to pack (default: all)")
    p.add_argument("--particles", type=int, default=None, help="number of macromolecules to try to place")
    p.add_argument("--noise-free", action="store_true",
                   help="also write reconstruction_noisefree.mrc: same optics and wedge, no noise")
    p.add_argument("--vesicles", type=int, default=None,
                   help="number of vesicles to try to place (default: one per (120 nm)^2 of area)")
    p.add_argument("--fiducials", type=int, default=None,
                   help="number of gold beads to try to place (default: one per (120 nm)^2, at least 2)")
    p.add_argument("--defocus-jitter", type=float, default=0.1,
                   help="per-tilt spread (sigma) of the defocus in micrometres (default 0.1)")
    p.add_argument("--contrast-volts", type=float, default=1.0,
                   help="effective potential contrast of unit density in volts; sets the SNR "
                        "(default 1.0: Pearson ~0.17 with the grand model)")
    p.set_defaults(handler=_phantom)

    p = commands.add_parser("train", help="train DUAL on unpaired noisy and clean volumes")
    p.add_argument("outdir", help="folder for model.pt, checkpoint.pt and training_log.jsonl")
    p.add_argument("--noisy", nargs="+", required=True, help="noisy-domain MRC volumes (tomograms)")
    p.add_argument("--clean", nargs="+", required=True,
                   help="clean-domain MRC volumes (grand models or high-SNR tomograms)")
    p.add_argument("--noisy-voxel-size", type=float, default=None, help="override the noisy headers")
    p.add_argument("--clean-voxel-size", type=float, default=None, help="override the clean headers")
    p.add_argument("--tilt-axis", choices=["y", "x"], default=None,
                   help="tilt axis of the noisy tomograms (default y); augmentation keeps "
                        "their missing wedge")
    _add_training_options(p)
    p.set_defaults(handler=_train)

    p = commands.add_parser("wedge-train",
                            help="train a missing-wedge model on the tomograms themselves")
    p.add_argument("outdir", help="folder for model.pt, checkpoint.pt and training_log.jsonl")
    p.add_argument("--tomograms", nargs="+", required=True, help="MRC tomograms (beam along Z)")
    p.add_argument("--tilt-range", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="tilt range in degrees (default: estimated from the first tomogram)")
    p.add_argument("--tilt-axis", choices=["y", "x"], default="y", help="default y")
    p.add_argument("--input-voxel-size", type=float, default=None,
                   help="voxel size of the tomograms in A, if their headers are wrong")
    _add_training_options(p)
    p.set_defaults(handler=_wedge_train)

    p = commands.add_parser("denoise", help="denoise tomograms with a trained model")
    _add_inference_options(p)
    p.add_argument("--suffix", default="_denoised", help="added to each output name")
    p.set_defaults(handler=_denoise)

    p = commands.add_parser("wedge", help="fill the missing wedge of tomograms with a wedge model")
    _add_inference_options(p)
    p.add_argument("--tilt-range", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="the tomograms' tilt range in degrees (default: the model's)")
    p.add_argument("--tilt-axis", choices=["y", "x"], default=None, help="default: the model's")
    p.add_argument("--transition", type=float, default=5.0,
                   help="degrees of smooth transition inside the cone's border (default 5)")
    p.add_argument("--suffix", default="_wedge", help="added to each output name")
    p.set_defaults(handler=_wedge)

    p = commands.add_parser("simulate", help="synthetic tomograms from clean density maps")
    _add_inference_options(p)
    p.add_argument("--variants", type=int, default=1, help="synthetic tomograms per map")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_simulate)

    p = commands.add_parser("model-info", help="a model file's settings and training summary, as JSON")
    p.add_argument("model", help="model file (model.pt) or training checkpoint (checkpoint.pt)")
    p.add_argument("--output", default=None, help="also write the JSON to this file")
    p.set_defaults(handler=_model_info)

    p = commands.add_parser("pick", help="template-free DoG particle picking (paper's DoG picker)")
    p.add_argument("tomogram", help="MRC tomogram")
    p.add_argument("outdir", help="folder for NAME_picks.tsv, NAME_picks.star and NAME.tbl "
                                  "(NAME: --tomo-name or the tomogram's file stem)")
    p.add_argument("--diameter", type=float, required=True, help="particle diameter in A")
    select = p.add_mutually_exclusive_group()
    select.add_argument("--top", type=int, default=None,
                        help="keep the N best picks (default 500 without --threshold)")
    select.add_argument("--threshold", type=float, default=None,
                        help="keep picks with DoG score >= T (score in units of the "
                             "tomogram's standard deviation)")
    p.add_argument("--min-distance", type=float, default=None,
                   help="A between picks, non-maximum suppression (default 24/28 of the diameter)")
    p.add_argument("--polarity", choices=["bright", "dark"], default="bright",
                   help="bright: particles denser = brighter than background (DUAL outputs, "
                        "phantoms); dark: raw reconstructions (default bright)")
    p.add_argument("--mask", default=None, help="MRC mask of the tomogram's shape: pick where > 0.5")
    p.add_argument("--margin", type=float, default=None,
                   help="A from the volume faces where nothing is picked (default: the radius)")
    p.add_argument("--voxel-size", type=float, default=None,
                   help="voxel size of the tomogram in A, if its header is wrong")
    p.add_argument("--tomo-name", default=None, help="rlnTomoName and file prefix (default: file stem)")
    p.add_argument("--tomo-index", type=int, default=1, help="Dynamo table column 20 (default 1)")
    p.add_argument("--formats", nargs="+", choices=["tsv", "star", "tbl"],
                   default=["tsv", "star", "tbl"], help="tables to write (default: all three)")
    p.add_argument("--threads", type=int, default=1, help="FFT threads (default 1)")
    p.set_defaults(handler=_pick)

    p = commands.add_parser("evaluate", help="score denoised volumes or picks against ground truth")
    what = p.add_subparsers(dest="what", metavar="WHAT")
    v = what.add_parser("volumes", help="PSNR, SSIM and Pearson of volumes against a reference")
    v.add_argument("reference", help="ground truth MRC (e.g. grandmodel.mrc)")
    v.add_argument("volumes", nargs="+", help="MRC volumes on the reference's grid")
    v.add_argument("--ssim-window", type=int, default=7)
    v.set_defaults(handler=_evaluate_volumes)
    k = what.add_parser("picks", help="precision, recall and F1 of picked coordinates")
    k.add_argument("picks", help="coordinate table (x y z score) or SHREC particle list")
    k.add_argument("truth", help="SHREC particle_locations.txt")
    k.add_argument("--voxel-size", type=float, required=True, help="Angstrom per voxel of both lists")
    k.add_argument("--distance", type=float, default=None,
                   help="match radius in Angstrom for one-to-one distance matching "
                        "(give --distance, --occupancy or both)")
    k.add_argument("--occupancy", default=None,
                   help="occupancy_mask.mrc for the SHREC 2021 hit criterion (labels = lines of TRUTH)")
    k.add_argument("--exclude", nargs="*", default=["vesicle", "fiducial"],
                   help="ground-truth classes left out of scoring (default: vesicle fiducial)")
    k.set_defaults(handler=_evaluate_picks)
    return parser


def _apply_job(subparser, job):
    """Make a job dict the defaults of `subparser`; return its positionals as argv.

    Options become parser defaults, so anything given on the command line wins and an
    option taking several values cannot swallow the command line's positionals.
    """
    unknown = set(job) - {a.dest for a in subparser._actions} - {"job"}
    if unknown:
        raise InputError("unknown keys in job file: %s" % ", ".join(sorted(unknown)))
    positionals = []
    for action in subparser._actions:
        if action.dest not in job:
            continue
        value = job[action.dest]
        if action.option_strings:
            subparser.set_defaults(**{action.dest: value})
            action.required = False
        else:
            values = value if isinstance(value, (list, tuple)) else [value]
            positionals += [str(v) for v in values]
    return positionals


def _command_path(parser, argv):
    """(innermost subparser, number of leading argv words that name it)."""
    depth = 0
    while depth < len(argv):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or argv[depth] not in subs[0].choices:
            break
        parser = subs[0].choices[argv[depth]]
        depth += 1
    return parser, depth


def expand_job(argv, parser):
    """Replace `--job FILE` in argv by the options it holds (command-line options win)."""
    if "--job" not in argv:
        return argv
    i = argv.index("--job")
    if i + 1 >= len(argv):
        raise InputError("--job needs a JSON file")
    try:
        with open(argv[i + 1]) as f:
            job = json.load(f)
    except (OSError, ValueError) as err:
        raise InputError("cannot read job file %s: %s" % (argv[i + 1], err)) from err
    rest = argv[:i] + argv[i + 2:]
    subparser, depth = _command_path(parser, rest)
    return rest[:depth] + _apply_job(subparser, job) + rest[depth:]


def main(argv=None):
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(expand_job(argv, parser))
        if not getattr(args, "handler", None):
            parser.print_help()
            return 2
        args.handler(args)
    except InputError as err:
        print("dual-engine: error: %s" % err, file=sys.stderr)
        return 2
    return 0
