"""`dual-engine COMMAND ...`: the one command line of the engine.

The options of every command are declared once, in contract.py; this module generates
the parser from them. Every command also takes `--job FILE.json`: a JSON object whose
keys are the command's option names (e.g. "voxel_size"), checked exactly like the
command line; values given on the command line win. Handlers import their modules
lazily so that `phantom`, `pick` or `evaluate` never pay for torch.
"""

import argparse
import json
import os
import sys
import typing

from dual_engine import __version__
from dual_engine.contract import COMMANDS, NOISE_MODELS, InputError, Job, RunError, command_fields


def _phantom(job):
    from dual_engine.synth.phantom import make_phantom

    summary = make_phantom(
        job.outdir,
        shape=job.shape,
        voxel_size=job.voxel_size,
        seed=job.seed,
        tilt_range=job.tilt_range,
        tilt_step=job.tilt_step,
        defocus_um=job.defocus,
        dose=job.dose,
        voltage_kv=job.voltage,
        cs_mm=job.cs,
        amplitude_contrast=job.amplitude_contrast,
        classes=list(job.classes) if job.classes else None,
        n_particles=job.particles,
        write_noise_free=job.noise_free,
        n_vesicles=job.vesicles,
        n_fiducials=job.fiducials,
        defocus_jitter_um=job.defocus_jitter,
        contrast_volts=job.contrast_volts,
        write_halves=job.halves,
    )
    print(json.dumps(summary, indent=1))


def _evaluate_volumes(job):
    from dual_engine.metrics import evaluate_volumes

    rows = evaluate_volumes(job.reference, list(job.volumes), ssim_window=job.ssim_window)
    print(json.dumps(rows, indent=1))


def _evaluate_picks(job):
    from dual_engine.metrics import evaluate_picks

    result = evaluate_picks(
        job.picks,
        job.truth,
        voxel_size=job.voxel_size,
        distance=job.distance,
        occupancy=job.occupancy,
        exclude=list(job.exclude),
    )
    print(json.dumps(result, indent=1))


def _pick(job):
    from dual_engine.pick import pick_file

    summary = pick_file(
        job.tomogram,
        job.outdir,
        job.diameter,
        top=job.top,
        threshold=job.threshold,
        min_distance=job.min_distance,
        polarity=job.polarity,
        mask=job.mask,
        margin=job.margin,
        voxel_size=job.voxel_size,
        tomo_name=job.tomo_name,
        formats=job.formats,
        tomo_index=job.tomo_index,
        workers=job.threads,
        overwrite=job.overwrite,
        fallback_polarity=job.fallback_polarity,
    )
    print(json.dumps(summary, indent=1))


def _train(job):
    from dual_engine.train import train

    summary = train(
        job.noisy,
        job.clean,
        job.outdir,
        job.config(),
        resume=job.resume,
        init_model=job.init_model,
        device=job.device,
        threads=job.threads,
        processes=job.processes,
        noisy_voxel_size=job.noisy_voxel_size,
        clean_voxel_size=job.clean_voxel_size,
        overwrite=job.overwrite,
        given=job.given,
        noisy_halves=job.noisy_halves,
    )
    print(json.dumps(summary, indent=1))


def _wedge_train(job):
    from dual_engine.train import train
    from dual_engine.wedge import wedge_config

    cfg = wedge_config(job.config(), job.tomograms, job.tilt_range, job.tilt_axis, job.given)
    summary = train(
        job.tomograms,
        job.tomograms,
        job.outdir,
        cfg,
        resume=job.resume,
        init_model=job.init_model,
        device=job.device,
        threads=job.threads,
        processes=job.processes,
        noisy_voxel_size=job.input_voxel_size,
        clean_voxel_size=job.input_voxel_size,
        overwrite=job.overwrite,
        given=job.given,
    )
    print(json.dumps(summary, indent=1))


def _denoise(job):
    from dual_engine.infer import denoise_files

    for result in denoise_files(job):
        print(json.dumps(result), flush=True)


def _wedge(job):
    from dual_engine.infer import compensate_files

    for result in compensate_files(job):
        print(json.dumps(result), flush=True)


def _simulate(job):
    from dual_engine.infer import simulate_files

    for result in simulate_files(job):
        print(json.dumps(result), flush=True)


def _model_info(job):
    from dual_engine.io import atomic_output
    from dual_engine.model import load_model

    cfg, state = load_model(job.model)
    info = {
        'model': os.path.abspath(job.model),
        'format': state['format'],
        'engine_version': state.get('engine_version'),
        'iteration': state['iteration'],
        'config': cfg.to_dict(),
        'training': state.get('training'),
        # what `simulate --noise-model` can use: 'fitted' needs spectra fitted in training
        'noise_models': [m for m in NOISE_MODELS if m != 'fitted' or state.get('spectra')],
        'fitted_tilt_range': (state.get('spectra') or {}).get('tilt_range'),
    }
    text = json.dumps(info, indent=1)
    if job.output:
        with atomic_output(job.output) as tmp, open(tmp, 'w') as f:
            f.write(text + '\n')
    print(text)


HANDLERS = {
    'phantom': _phantom,
    'train': _train,
    'wedge-train': _wedge_train,
    'denoise': _denoise,
    'wedge': _wedge,
    'simulate': _simulate,
    'model-info': _model_info,
    'pick': _pick,
    'evaluate volumes': _evaluate_volumes,
    'evaluate picks': _evaluate_picks,
}


def _base_kind(kind):
    if typing.get_origin(kind) is typing.Union:
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    return kind


def _add_option(parser, cls, field):
    """One argparse argument for an option field. Defaults are SUPPRESSed: the parsed
    namespace holds only what the user typed, and the contract fills in the rest."""
    meta = field.metadata
    kind = _base_kind(typing.get_type_hints(cls)[field.name])
    default = field.default
    text = meta['help']
    if default not in (None, False, ()):
        shown = ' '.join(map(str, default)) if isinstance(default, tuple) else default
        text += ' (default %s)' % shown
    kwargs = dict(default=argparse.SUPPRESS, help=text)
    if kind is bool:
        # An option on by default can be turned off: --no-NAME.
        kwargs['action'] = argparse.BooleanOptionalAction if default else 'store_true'
    elif typing.get_origin(kind) is tuple:
        args = typing.get_args(kind)
        kwargs['type'] = args[0]
        kwargs['nargs'] = '+' if args[-1] is Ellipsis else len(args)
    else:
        kwargs['type'] = kind
    if meta.get('choices'):
        kwargs['choices'] = meta['choices']
    if meta.get('metavar'):
        kwargs['metavar'] = meta['metavar']
    if meta.get('positional'):
        # Optional here: a job file may give it; the contract says when it is missing.
        if kwargs.get('nargs') == '+':
            kwargs['nargs'] = '*'
        else:
            kwargs['nargs'] = '?'
        parser.add_argument(field.name, **kwargs)
    else:
        parser.add_argument('--' + field.name.replace('_', '-'), dest=field.name, **kwargs)


def _add_command(commands, name, command):
    text, _ = COMMANDS[command]
    p = commands.add_parser(name, help=text, description=text)
    for cls, field in command_fields(command):
        _add_option(p, cls, field)
    p.add_argument('--job', default=None, help='JSON file of option values (the command line wins)')
    p.set_defaults(command=command)
    return p


def build_parser():
    parser = argparse.ArgumentParser(prog='dual-engine', description=__doc__.split('\n')[0])
    parser.add_argument('--version', action='version', version='dual-engine %s' % __version__)
    commands = parser.add_subparsers(dest='verb', metavar='COMMAND')
    evaluate = None
    for command in COMMANDS:
        if command.startswith('evaluate '):
            if evaluate is None:
                e = commands.add_parser(
                    'evaluate', help='score denoised volumes or picks against ground truth'
                )
                evaluate = e.add_subparsers(dest='what', metavar='WHAT')
            _add_command(evaluate, command.split()[1], command)
        else:
            _add_command(commands, command, command)
    return parser


def read_job_file(path):
    try:
        with open(path) as f:
            job = json.load(f)
    except (OSError, ValueError) as err:
        raise InputError('cannot read job file %s: %s' % (path, err)) from err
    if not isinstance(job, dict):
        raise InputError('job file %s must hold a JSON object' % path)
    return job


def parse_job(argv, parser=None):
    """(command, Job) from a command line, with its --job file merged in."""
    parser = parser or build_parser()
    args = vars(parser.parse_args(argv))
    command = args.pop('command', None)
    if command is None:
        return None, None
    job_file = args.pop('job', None)
    values = read_job_file(job_file) if job_file else {}
    values.pop('job', None)
    for name, value in args.items():
        if name in ('verb', 'what') or value in (None, []):
            continue
        values[name] = value
    return command, Job(command, values)


def main(argv=None):
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        command, job = parse_job(argv, parser)
        if command is None:
            parser.print_help()
            return 2
        HANDLERS[command](job)
    except InputError as err:
        print('dual-engine: error: %s' % err, file=sys.stderr)
        return 2
    except RunError as err:
        print('dual-engine: error: %s' % err, file=sys.stderr)
        return 1
    except OSError as err:  # a full disk or a vanished folder while writing
        print(
            'dual-engine: error: %s%s'
            % (err.strerror or err, ': %s' % err.filename if err.filename else ''),
            file=sys.stderr,
        )
        return 1
    return 0
