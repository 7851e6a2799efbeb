"""The engine's contract with whoever calls it: every option of every command, declared
once (type, default, range, help); the rules an input must follow; shared defaults and
file names; and the one way random streams are derived from a seed.

This module imports neither torch nor Scipion (only the standard library and numpy), so
the Scipion plugin loads it by path (dual/contract.py) to validate its forms and to
build its job files with exactly the engine's rules. The command line (cli.py) is
generated from the option classes below, and a job file (`--job FILE.json`) is checked
by the same code as the command line.

An option class is a dataclass whose fields are made with `option(...)`. Constructing
one checks every field (type, range, choices) and raises InputError with a message for
the user. A command is a tuple of option classes (COMMANDS); its job-file keys are
their field names.
"""

import dataclasses
import math
import os
import re
import typing
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np


class InputError(ValueError):
    """Bad user input (missing file, wrong voxel size, NaNs...): the message is for the user."""


class RunError(RuntimeError):
    """A run that cannot go on (a diverged training, say): the message is for the user."""


# ----------------------------------------------------------------------------- names
# What a training run leaves in its output folder (train.py).
MODEL_FILE = 'model.pt'
CHECKPOINT_FILE = 'checkpoint.pt'
TRAINING_LOG = 'training_log.jsonl'
TRAINING_LOCK = '.training.lock'
SNAPSHOT_DIR = 'snapshots'  # snapshot models: SNAPSHOT_DIR/iterNNNNN.pt


def snapshot_name(iteration):
    return 'iter%05d.pt' % iteration


# What `pick` writes for a tomogram NAME (pick.py).
PICKS_SUFFIX = '_picks.tsv'
STAR_SUFFIX = '_picks.star'
DYNAMO_SUFFIX = '.tbl'
PICK_FORMATS = ('tsv', 'star', 'tbl')

# ----------------------------------------------------------------------------- limits
DEFAULT_TILE = 160  # inference tile side in voxels (infer.apply_tiled)
# A tile size is worth its work when at least this fraction of a tile's voxels is kept
# (its core; the rest is the border the network needs, see tile_layout).
MIN_TILE_KEPT = 0.125
DEFAULT_TOP = 500  # picks per tomogram when neither top nor threshold is given
# Pick defaults, as fractions of the particle diameter, chosen by F1 on the crowded
# picking benchmark (bench/run_picking.py: best or tied best for the raw, smoothed and
# noise-free tomograms and the grand model; the paper's 24/28 and the radius lost 0.08
# to 0.24 F1 there): suppression at one radius, nothing picked within a quarter
# diameter of a face.
NMS_FRACTION = 0.5
MARGIN_FRACTION = 0.25
TRANSITION_DEGREES = 5.0  # cosine ramp inside the missing cone's border (wedge.py)
# Test-time flips (infer.FlipAveraged): identity, along the tilt axis, beam + other axis,
# and both; the flips that keep an asymmetric missing wedge (data.wedge_preserving_flips).
FLIP_AVERAGE_COUNT = 4
MIN_TILE = 32
SUBVOLUME_MULTIPLE = 8  # three poolings' worth: the U-Nets and discriminators need it
MIN_BATCH = 2  # the noise-code KL term needs a batch covariance
MIN_DIAMETER_VOXELS = 2.0  # a DoG cannot find particles thinner than this
# Inference brings each volume to the model's working voxel size and back; beyond this
# factor the data should be binned (or a model trained at its voxel size) instead.
MAX_VOXEL_SIZE_RATIO = 2.0
TILT_AXES = ('y', 'x')
TASKS = ('denoise', 'wedge')
# How `simulate` makes a tomogram of a map (infer._simulate): 'fitted', the map through
# the transfer of the learned simulator plus stationary noise of the real tomograms'
# spectrum, both fitted when training ends (spectral.py); 'learned', the paper's
# Gs(v + P(Gn(z))).
NOISE_MODELS = ('fitted', 'learned')
DEFAULT_NOISE_MODEL = 'fitted'
NOISE_MODEL_HELP = (
    "'fitted': the map through the learned simulator's linear response plus stationary "
    "noise with the training tomograms' spectrum and missing wedge, fitted when "
    "training ends; 'learned': the paper's Gs(v + P(Gn(z))), whose noise level follows "
    "the structures"
)
POLARITIES = ('bright', 'dark')
AUTO_POLARITY = 'auto'  # pick: the contrast measured on the tomogram (pick.measured_polarity)
PICK_SUMMARY_SUFFIX = '_picks.json'  # pick: what was picked and with which contrast
POLARITY_MIN_SKEW = 0.2  # pick auto: |skewness| of the DoG response below which it is unclear
CONTRASTS = ('auto', 'same', 'inverted', 'free')  # DualConfig.noisy_contrast
UPSAMPLINGS = ('transposed', 'linear', 'linear-simulator')  # DualConfig.upsampling
UNET_UPSAMPLINGS = ('linear', 'transposed')  # nets.unet.UNet3D's
NETWORKS = ('denoiser', 'simulator')  # a model's U-Nets: Dn and Gs
DEVICE_PATTERN = re.compile(r'^(auto|cpu|cuda(:\d+)?)$')


# ----------------------------------------------------------------------------- options
def option(
    default=None,
    help='',
    *,
    required=False,
    ge=None,
    gt=None,
    le=None,
    choices=None,
    positional=False,
    role=None,
    cli=True,
    metavar=None,
    exclusive=None,
):
    """A dataclass field declaring one option.

    required: must be given (default None otherwise); ge / gt / le: numeric bounds (each
    item of a tuple); choices: allowed strings; positional: a positional argument on the
    command line; role: for the model settings, 'schedule' (may change when a run is
    continued) or 'task' (set by the command); cli: False for settings stored in models
    but not set by users; exclusive: name of a group of which at most one may be given.
    """
    meta = dict(
        help=help,
        required=required,
        ge=ge,
        gt=gt,
        le=le,
        choices=choices,
        positional=positional,
        role=role,
        cli=cli,
        metavar=metavar,
        exclusive=exclusive,
    )
    return dataclasses.field(default=default, metadata=meta)


def _check_number(name, value, meta):
    for bound, ok, text in (
        ('ge', lambda v, b: v >= b, '>='),
        ('gt', lambda v, b: v > b, '>'),
        ('le', lambda v, b: v <= b, '<='),
    ):
        if meta.get(bound) is not None and not ok(value, meta[bound]):
            raise InputError('%s must be %s %g (got %g)' % (name, text, meta[bound], value))


def coerce(name, value, kind, meta):
    """`value` checked against the annotation `kind` and the field's metadata; returns
    it converted (ints from whole floats, tuples from lists). Raises InputError."""
    if typing.get_origin(kind) is typing.Union:  # Optional[X]
        if value is None:
            return None
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if value is None:
        raise InputError('%s needs a value (got null)' % name)
    if kind is bool:
        if not isinstance(value, bool):
            raise InputError('%s must be true or false (got %r)' % (name, value))
        return value
    if kind in (int, float):
        whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (kind is int and not whole)
            or not math.isfinite(value)
        ):
            raise InputError(
                '%s must be %s (got %r)'
                % (name, 'an integer' if kind is int else 'a finite number', value)
            )
        value = kind(value)
        _check_number(name, value, meta)
        return value
    if kind is str:
        if not isinstance(value, str):
            raise InputError('%s must be a string (got %r)' % (name, value))
        if meta.get('choices') and value not in meta['choices']:
            raise InputError(
                '%s must be one of %s (got %r)' % (name, ', '.join(meta['choices']), value)
            )
        return value
    if typing.get_origin(kind) is tuple:
        args = typing.get_args(kind)
        if not isinstance(value, (list, tuple)):
            raise InputError('%s must be a list (got %r)' % (name, value))
        if args[-1] is Ellipsis:
            if not value:
                raise InputError('%s must not be empty' % name)
            args = (args[0],) * len(value)
        elif len(value) != len(args):
            raise InputError('%s must have %d values (got %d)' % (name, len(args), len(value)))
        return tuple(coerce(name, v, a, meta) for v, a in zip(value, args))
    raise TypeError('unsupported option type %r for %s' % (kind, name))


def check_fields(instance):
    """Check and convert every field of an option dataclass instance, in place."""
    hints = typing.get_type_hints(type(instance))
    groups = {}
    for field in dataclasses.fields(instance):
        value = getattr(instance, field.name)
        if value is None and field.metadata.get('required'):
            raise InputError('%s is required' % field.name)
        value = coerce(field.name, value, hints[field.name], field.metadata)
        object.__setattr__(instance, field.name, value)
        group = field.metadata.get('exclusive')
        if group and value is not None:
            groups.setdefault(group, []).append(field.name)
    for names in groups.values():
        if len(names) > 1:
            raise InputError('give only one of %s' % ', '.join(names))


def option_fields(cls, cli_only=True):
    """The fields of an option class (those set from the command line by default)."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get('cli', True) or not cli_only]


class Options:
    """Base of the option classes: checked on construction."""

    def __post_init__(self):
        check_fields(self)


# ----------------------------------------------------------------------------- rules
def check_tilt_range(tilt_range):
    """(min, max) of a tilt range that missing-wedge compensation by domain swap can
    fill; InputError otherwise.

    Swapping the beam axis with the in-plane axis maps the direction of tilt angle a to
    90 - a (modulo 180), so the copy's missing directions, (-90 - min, 90 - max), lie
    inside the measured range [min, max] exactly when min <= -45 and max >= 45: then
    every direction is measured in one of the two domains.
    """
    tmin, tmax = (float(t) for t in tilt_range)
    if not -90 < tmin < tmax < 90:
        raise InputError(
            'the tilt range must satisfy -90 < min < max < 90 degrees (got %g..%g)' % (tmin, tmax)
        )
    if tmin > -45 or tmax < 45:
        raise InputError(
            'a tilt range of %g..%g degrees leaves directions that the swapped '
            'copy is missing too: missing-wedge compensation by domain swap '
            'needs min <= -45 and max >= 45 degrees' % (tmin, tmax)
        )
    return tmin, tmax


def check_subvolume_size(size):
    if size % SUBVOLUME_MULTIPLE:
        raise InputError(
            'the subvolume size must be a multiple of %d (got %d)' % (SUBVOLUME_MULTIPLE, size)
        )
    return size


def check_fits_subvolume(name, shape, voxel_size, working_voxel_size, subvolume_size):
    """A volume of `shape` voxels of `voxel_size` A must hold a training subvolume once
    resampled to the working voxel size (it is resampled to round(n * factor) voxels)."""
    side = int(round(min(shape) * voxel_size / working_voxel_size))
    if side < subvolume_size:
        raise InputError(
            '%s is %s voxels at %.2f A/voxel, only %d voxels across at the '
            'working voxel size of %.2f A, smaller than the %d^3 subvolumes: use '
            'a smaller subvolume size or a finer working voxel size'
            % (
                name,
                'x'.join(map(str, shape)),
                voxel_size,
                side,
                working_voxel_size,
                subvolume_size,
            )
        )


def check_diameter(diameter, voxel_size):
    """A particle diameter (A) the DoG picker can use at `voxel_size` (A)."""
    if diameter / voxel_size < MIN_DIAMETER_VOXELS:
        raise InputError(
            'a %g A particle is only %.2f voxels of %g A: the diameter must '
            'span at least %g voxels'
            % (diameter, diameter / voxel_size, voxel_size, MIN_DIAMETER_VOXELS)
        )
    return diameter


def check_voxel_size_ratio(voxel_size, working_voxel_size, what='the volume'):
    """Refuse resampling by more than MAX_VOXEL_SIZE_RATIO (a wrong header, usually)."""
    ratio = max(voxel_size, working_voxel_size) / min(voxel_size, working_voxel_size)
    if ratio > MAX_VOXEL_SIZE_RATIO:
        raise InputError(
            '%s: %.3g A/voxel, but the model works at %.3g A/voxel, %.1fx '
            'apart (at most %gx): check the voxel size, bin the data closer '
            'to %.3g A, or train a model at its voxel size'
            % (
                what,
                voxel_size,
                working_voxel_size,
                ratio,
                MAX_VOXEL_SIZE_RATIO,
                working_voxel_size,
            )
        )
    return ratio


def unet_receptive_radius(depth, upsampling):
    """Voxels from the centre of the receptive field of a U-Net of `depth` poolings
    (nets.unet.UNet3D) to its edge, an upper bound: two 3x3x3 convolutions per block on
    each level, plus pooling and upsampling (UNET_UPSAMPLINGS); trilinear upsampling
    reaches one voxel further on each level below the top. Depth 2: 23 voxels, 26
    with 'linear'."""
    radius = sum(5 * 2**level for level in range(depth)) + 2 * 2**depth
    return radius + (2**depth - 1 if upsampling == 'linear' else 0)


def unet_upsampling(upsampling, network):
    """The upsampling (UNET_UPSAMPLINGS) of one of a model's U-Nets (NETWORKS) for
    its DualConfig.upsampling."""
    if upsampling == 'linear-simulator':
        return 'linear' if network == 'simulator' else 'transposed'
    return upsampling


def tile_layout(tile, overlap, multiple):
    """(tile side, overlap) the overlap-tile loop uses (streaming.tile_grid) for a
    requested `tile` and `overlap` (voxels dropped at each face of a tile): the overlap
    rounded up to the network's size step `multiple` (it keeps the pooling grid), the
    tile rounded up to it and grown where it would leave a core of under 4 steps."""

    def round_up(n):
        return int(math.ceil(n / multiple) * multiple)

    overlap = round_up(overlap)
    return round_up(max(tile, 2 * overlap + 4 * multiple)), overlap


def tile_kept_fraction(tile, unet_depth, upsampling, overlap=None):
    """The fraction of a full cubic tile's voxels whose output is kept: its core, the
    tile less `overlap` voxels (default: the U-Net's receptive radius) at each face."""
    multiple = 2**unet_depth
    if overlap is None:
        overlap = unet_receptive_radius(unet_depth, upsampling)
    side, overlap = tile_layout(tile, overlap, multiple)
    return ((side - 2 * overlap) / side) ** 3


def min_useful_tile(unet_depth, upsampling, overlap=None):
    """The smallest tile side that keeps at least MIN_TILE_KEPT of its work (96 voxels
    for the default U-Net of depth 2: a 48^3 core)."""
    tile = 2**unet_depth
    while tile_kept_fraction(tile, unet_depth, upsampling, overlap) < MIN_TILE_KEPT:
        tile += 2**unet_depth
    return tile


def tile_warning(tile, unet_depth, upsampling, overlap=None):
    """A message when `tile` wastes most of its work on the tile borders (below
    min_useful_tile), else None. Not an error: the result does not depend on the tile
    size, only the time it takes (and a smaller tile needs less memory)."""
    useful = min_useful_tile(unet_depth, upsampling, overlap)
    if tile >= useful:
        return None
    radius = unet_receptive_radius(unet_depth, upsampling) if overlap is None else overlap
    side, border = tile_layout(tile, radius, 2**unet_depth)
    default = ''
    if DEFAULT_TILE >= useful:
        default = '; the default, %d, keeps %.1f%%' % (
            DEFAULT_TILE,
            100 * tile_kept_fraction(DEFAULT_TILE, unet_depth, upsampling, overlap),
        )
    return (
        'a tile size of %d keeps only the central %d^3 voxels of each %d^3 tile (%.1f%% '
        'of its work: the %d voxels at each face only give the network its view): use at '
        'least %d (keeps %.1f%%%s) unless memory is short'
        % (
            tile,
            side - 2 * border,
            side,
            100 * tile_kept_fraction(tile, unet_depth, upsampling, overlap),
            border,
            useful,
            100 * tile_kept_fraction(useful, unet_depth, upsampling, overlap),
            default,
        )
    )


def check_tomo_name(name):
    """A tomogram name usable as a file prefix and as a STAR rlnTomoName."""
    name = str(name)
    if (
        not name
        or any(c.isspace() for c in name)
        or name[0] in "#_'\""
        or name.startswith(('data_', 'loop_'))
        or not re.fullmatch(r'[\w.+-]+', name)
        or name.startswith('.')
    ):
        raise InputError(
            'tomogram name %r cannot be used: it must be non-empty, made of '
            'letters, digits and . _ + - only, and not start with #, _, ., a '
            'quote, data_ or loop_' % name
        )
    return name


def safe_tomo_name(key):
    """The closest name to `key` (a tsId, say) that check_tomo_name accepts."""
    name = re.sub(r'[^\w.+-]+', '_', str(key))
    if not name or name[0] in '#_.' or name.startswith(('data_', 'loop_')):
        name = 'tomo' + name
    return check_tomo_name(name)


def output_name(input_path, suffix):
    """The output file name of an input volume: its stem plus `suffix`, .mrc."""
    return os.path.splitext(os.path.basename(input_path))[0] + suffix + '.mrc'


def simulated_name(input_path, variant):
    """The file name of synthetic tomogram `variant` of a map (`simulate`)."""
    return output_name(input_path, '_sim%02d' % variant)


# A box (Angstrom) that holds every phantom macromolecule (the largest, the ribosome of
# synth/packing.py, is ~28 nm across): the box size of the plugin's phantom coordinates.
PHANTOM_PARTICLE_BOX = 320.0
PHANTOM_CONTEXT_CLASSES = ('vesicle', 'fiducial')  # phantom classes that are not particles

# A map with labels (`simulate`): a SHREC-2021 model folder's grandmodel.mrc (the
# phantom's layout), whose label files beside it follow into each synthetic tomogram.
LABELLED_MAP_NAME = 'grandmodel.mrc'
LABEL_FILES = (
    'class_mask.mrc',
    'occupancy_mask.mrc',
    'particle_locations.txt',
    'class_conversion_table.txt',
)


def simulated_label_name(simulated_path, label_file):
    """The file a label file of a map is written to beside synthetic tomogram
    `simulated_path`: that tomogram's stem, '_', the label file's name."""
    stem = os.path.splitext(os.path.basename(simulated_path))[0]
    return '%s_%s' % (stem, label_file)


def check_outputs(paths, overwrite=False):
    """Refuse outputs that collide with each other, that exist (unless `overwrite`), or
    whose folder cannot be created or written. paths: [(source, output path)]."""
    seen = {}
    for source, path in paths:
        real = os.path.realpath(path)
        if real in seen:
            raise InputError(
                '%s and %s would both be written to %s: give the inputs '
                'distinct file names' % (seen[real], source, path)
            )
        seen[real] = source
        if os.path.exists(path) and not overwrite:
            raise InputError(
                '%s exists already: remove it, choose another output folder, '
                'or give --overwrite' % path
            )
    for folder in sorted({os.path.dirname(os.path.abspath(p)) for _, p in paths}):
        check_writable_folder(folder)


def check_writable_folder(folder, create=False):
    """Refuse a folder that cannot be written, or created (nearest existing parent not
    writable); create it only when asked, so a refused run leaves nothing behind."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise InputError(
            'cannot create the output folder %s: %s is not a folder' % (folder, existing)
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError('cannot write to %s: %s is not writable' % (folder, existing))
    if create:
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as err:
            raise InputError('cannot create the output folder %s: %s' % (folder, err.strerror))


def read_picks_table(path):
    """(xyz [N, 3], scores [N]) of a picks table written by `pick` (header x y z score,
    voxels); a table without the score column scores every pick 1."""
    with open(path) as f:
        header = f.readline().split()
    if header[:3] != ['x', 'y', 'z']:
        raise InputError('%s is not a picks table (header %s)' % (path, ' '.join(header)))
    table = np.loadtxt(path, skiprows=1, ndmin=2)
    if table.size == 0:
        return np.zeros((0, 3)), np.zeros(0)
    scores = table[:, 3] if table.shape[1] > 3 else np.ones(len(table))
    return table[:, :3], scores


@dataclass
class Particle:
    """One line of a SHREC 2021 particle_locations.txt."""

    name: str
    x: float
    y: float
    z: float
    rot_z1: float = 0.0
    rot_x: float = 0.0
    rot_z2: float = 0.0

    @property
    def xyz(self):
        return np.array([self.x, self.y, self.z], dtype=np.float64)


def read_particle_locations(path):
    """The particles of a SHREC 2021 particle list (`class x y z [rot_Z1 rot_X rot_Z2]`
    per line, voxels and ZXZ degrees); a line that is not one is refused."""
    particles = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            try:
                numbers = [float(v) for v in fields[1:]]
            except ValueError:
                numbers = None
            if len(fields) not in (4, 7) or numbers is None or not all(map(math.isfinite, numbers)):
                raise InputError(
                    "%s:%d: expected 'class x y z [rot_Z1 rot_X rot_Z2]' with finite numbers"
                    % (path, lineno)
                )
            particles.append(Particle(fields[0], *numbers))
    return particles


# ----------------------------------------------------------------------------- seeds
# Purposes of random streams: a stream is (seed, purpose, keys...), and two different
# tuples never share a stream (numpy SeedSequence spawn keys).
STREAMS = {'weights': 1, 'train': 2, 'simulate': 3, 'monitor': 4, 'fit-noise': 5}


def seed_sequence(seed, purpose, *keys):
    """The SeedSequence of stream (seed, purpose, *keys); keys are non-negative ints
    (e.g. rank and iteration for training, input index and variant for simulation)."""
    return np.random.SeedSequence(
        int(seed), spawn_key=(STREAMS[purpose],) + tuple(int(k) for k in keys)
    )


def numpy_rng(seed, purpose, *keys):
    return np.random.default_rng(seed_sequence(seed, purpose, *keys, 0))


def torch_seed(seed, purpose, *keys):
    """A 63-bit integer seed for torch.Generator.manual_seed, from the same stream."""
    state = seed_sequence(seed, purpose, *keys, 1).generate_state(1, np.uint64)[0]
    return int(state) & (2**63 - 1)


# ----------------------------------------------------------------------------- commands
@dataclass
class DualConfig(Options):
    """Everything that defines a DUAL model and its training, stored in every model file.
    Defaults: the paper where it gives a value (optimiser, loss weights, 32^3
    subvolumes, 1 nm voxels); measured choices elsewhere (README, "Engine defaults")."""

    voxel_size: float = option(10.0, 'working voxel size in A (paper: 10)', gt=0)
    subvolume_size: int = option(
        32,
        'side of the training subvolumes, a multiple of %d (paper: 32)' % SUBVOLUME_MULTIPLE,
        ge=SUBVOLUME_MULTIPLE,
    )
    unet_width: int = option(8, "channels of the U-Nets' first level", ge=1)
    unet_depth: int = option(2, 'poolings in the U-Nets', ge=1, le=3)
    upsampling: str = option(
        'transposed',
        "the U-Nets' upsampling: transposed (a 2x2x2 transposed convolution of stride 2, "
        "as the paper's U-Net), linear (a 1x1x1 convolution, then trilinear "
        'interpolation) or linear-simulator (linear in Gs, transposed in Dn). Transposed '
        'leaves a period-2 pattern in the outputs, which alone told every simulation '
        "of the 'learned' noise model from a real tomogram (the 'fitted' one has none); "
        'but a linear Dn denoised less well in 400 iterations, and segmenters trained on '
        "a linear Gs's learned-noise simulations scored a lower Dice on real tomograms "
        'for each of three training seeds (bench/run_training.py, bench/run_realism.py, '
        'bench/run_sim2real.py)',
        cli=False,
        choices=UPSAMPLINGS,
    )
    code_size: int = option(16, 'noise code dimension K', ge=1)
    noise_width: int = option(16, 'channels of the noise encoder/decoder', ge=1)
    noise_scale: float = option(
        2.0,
        "standard deviation of Gn's noise volumes, against the standardised clean maps "
        "(0: learned, as in the paper; not in the paper otherwise: with the noise free to "
        "shrink, the clean cycle's reconstruction loss shrinks it, and Gs has to "
        "amplify a faint noise, which it did only beside the structures)",
        ge=0,
    )
    disc_width: int = option(16, 'channels of the discriminators', ge=1)
    batch_size: int = option(4, 'subvolumes per domain per iteration and process', ge=MIN_BATCH)
    iterations: int = option(400, 'total training iterations', ge=1, role='schedule')
    lr: float = option(4e-4, 'AdamW learning rate (paper: 1e-4)', gt=0)
    disc_lr_factor: float = option(
        0.5, "the discriminators' learning rate relative to lr (1: the same, as the paper)", gt=0
    )
    lr_decay: float = option(
        0.5,
        'fraction of the iterations, at the end, over which the learning rate falls '
        'linearly to zero (0: constant, as the paper)',
        ge=0,
        le=1,
    )
    weight_average: float = option(
        0.995,
        'largest decay of the moving average of the generator weights that the model '
        'uses; the decay grows as (1 + t) / (10 + t) with the iteration t up to it, so '
        'at 400 iterations the average spans about the last 45 (0: the last weights, '
        'as the paper)',
        ge=0,
        le=0.9999,
    )
    betas: Tuple[float, float] = option(
        (0.5, 0.999),
        'AdamW betas (paper: 0.9, 0.999; with lr 4e-4, beta1 0.5 as in CycleGAN trained '
        'faster and more evenly over seeds: bench/run_training.py)',
        cli=False,
        ge=0,
        le=1,
    )
    eps: float = option(1e-8, 'AdamW epsilon', cli=False, gt=0)
    weight_decay: float = option(1e-6, 'AdamW weight decay', cli=False, ge=0)
    lambda_rec: float = option(1.0, 'weight of the reconstruction loss', ge=0)
    lambda_adv: float = option(1.0, 'weight of the adversarial loss', ge=0)
    lambda_kl: float = option(0.1, 'weight of the noise-code KL loss', ge=0)
    lambda_spectrum: float = option(
        1.0,
        "weight of the simulations' spectrum loss (losses.spectrum_loss; not in the paper)",
        ge=0,
    )
    lambda_polarity: float = option(
        10.0,
        'weight of the contrast anchor (losses.polarity_loss; zero once the contrast is right)',
        ge=0,
    )
    noisy_contrast: str = option(
        'auto',
        "particle contrast of the noisy volumes against the clean ones: same, "
        "inverted (raw reconstructions against density maps), free (unconstrained, "
        "as in the paper) or auto (estimated from both domains when training "
        "starts; free when unclear)",
        choices=CONTRASTS,
    )
    seed: int = option(0, 'random seed (weights and sampling)', ge=0)
    log_every: int = option(10, 'iterations between log lines', ge=1, role='schedule')
    checkpoint_every: int = option(200, 'iterations between checkpoints', ge=1, role='schedule')
    snapshot_every: int = option(
        0,
        'iterations between snapshot models kept in %s/ (0: none)' % SNAPSHOT_DIR,
        ge=0,
        role='schedule',
    )
    # 'denoise': noisy tomograms <-> clean volumes (paper, Methods). 'wedge': tomograms
    # <-> the same tomograms with the beam axis and the in-plane axis swapped, the
    # missing-wedge translation of the paper's Fig. 6 (wedge.py).
    task: str = option(
        'denoise', 'what the model translates', cli=False, choices=TASKS, role='task'
    )
    tilt_axis: str = option(
        'y',
        'tilt axis of the tomograms; training augmentation keeps their missing wedge',
        choices=TILT_AXES,
        role='task',
    )
    tilt_range: Tuple[float, float] = option(
        (-60.0, 60.0), 'tilt range of the wedge task', cli=False, role='task'
    )

    def __post_init__(self):
        super().__post_init__()
        check_subvolume_size(self.subvolume_size)
        if self.task == 'wedge':
            check_tilt_range(self.tilt_range)

    def to_dict(self):
        return to_json(self)

    @classmethod
    def from_dict(cls, values):
        """A config from a model file's dict (untrusted: checked like any input)."""
        if not isinstance(values, dict):
            raise InputError('the model settings are not a dictionary')
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise InputError('unknown DUAL settings: %s' % ', '.join(sorted(unknown)))
        return cls(**dict(LEGACY_MODEL_SETTINGS, **values))


def settable_config_fields(role=None):
    """DualConfig fields a user sets (optionally only those of one role)."""
    return [f for f in option_fields(DualConfig) if role is None or f.metadata.get('role') == role]


# The paper's simulation path (eq. 1 with Gn's noise level learned, no spectrum loss).
# The wedge task trains with it unless told otherwise (wedge.wedge_config: its two
# domains hold the same noise, and its model does not simulate).
PAPER_SIMULATION_SETTINGS = {'noise_scale': 0.0, 'lambda_spectrum': 0.0}
# What model files written before a setting existed were trained with: a file lacking
# the setting is read with this value, not today's default.
LEGACY_MODEL_SETTINGS = dict(PAPER_SIMULATION_SETTINGS, upsampling='transposed')


@dataclass
class RunOptions(Options):
    device: str = option('auto', 'auto, cpu, cuda or cuda:N')
    threads: Optional[int] = option(
        None, 'CPU threads for torch (default: the CPUs this process may use)', ge=1
    )

    def __post_init__(self):
        super().__post_init__()
        if not DEVICE_PATTERN.match(self.device):
            raise InputError("device must be auto, cpu, cuda or cuda:N (got %r)" % self.device)


@dataclass
class TrainOptions(Options):
    noisy: Tuple[str, ...] = option(None, 'noisy-domain MRC volumes (tomograms)', required=True)
    clean: Tuple[str, ...] = option(
        None, 'clean-domain MRC volumes (grand models or high-SNR tomograms)', required=True
    )
    noisy_voxel_size: Optional[float] = option(
        None, 'voxel size of the noisy volumes in A, if their headers are wrong', gt=0
    )
    clean_voxel_size: Optional[float] = option(
        None, 'voxel size of the clean volumes in A, if their headers are wrong', gt=0
    )
    noisy_halves: Optional[Tuple[str, ...]] = option(
        None,
        'the two half tomograms (even and odd, either first) of each noisy volume, in '
        'their order (EVEN1 ODD1 EVEN2 ...): the noise model of simulation measures its '
        'share of structure on them',
    )


@dataclass
class TrainingRunOptions(Options):
    """Where a training run writes, and how it starts: afresh, from its checkpoint, or
    from a model."""

    outdir: str = option(
        None,
        'folder for %s, %s and %s' % (MODEL_FILE, CHECKPOINT_FILE, TRAINING_LOG),
        required=True,
        positional=True,
    )
    resume: bool = option(False, 'continue from OUTDIR/%s if present' % CHECKPOINT_FILE)
    overwrite: bool = option(False, 'start afresh over an earlier run in OUTDIR')
    init_model: Optional[str] = option(None, "start from this model file's weights and iteration")
    processes: int = option(1, 'DistributedDataParallel processes (one per GPU; gloo on CPU)', ge=1)


@dataclass
class WedgeTrainOptions(Options):
    tomograms: Tuple[str, ...] = option(None, 'MRC tomograms (beam along Z)', required=True)
    tilt_range: Optional[Tuple[float, float]] = option(
        None,
        'tilt range in degrees (default: estimated from the first tomogram)',
        metavar=('MIN', 'MAX'),
    )
    input_voxel_size: Optional[float] = option(
        None, 'voxel size of the tomograms in A, if their headers are wrong', gt=0
    )

    def __post_init__(self):
        super().__post_init__()
        if self.tilt_range is not None:
            check_tilt_range(self.tilt_range)


@dataclass
class InferenceOptions(Options):
    model: str = option(
        None, 'model file written by training (%s)' % MODEL_FILE, required=True, positional=True
    )
    inputs: Tuple[str, ...] = option(None, 'MRC volumes', required=True, positional=True)
    outdir: str = option(None, 'output folder', required=True)
    tile: int = option(
        DEFAULT_TILE, 'tile side in voxels; smaller tiles use less memory', ge=MIN_TILE, le=1024
    )
    overlap: Optional[int] = option(
        None,
        'voxels dropped at each tile border (default: the network\'s receptive radius)',
        ge=0,
        le=256,
    )
    voxel_size: Optional[float] = option(
        None, 'voxel size of the inputs in A, if their headers are wrong', gt=0
    )
    overwrite: bool = option(False, 'replace outputs that exist already')


FLIP_AVERAGE_HELP = (
    'average the network over the %d flips of the volume that keep its missing wedge '
    '(%dx the time; less noise in the output)' % (FLIP_AVERAGE_COUNT, FLIP_AVERAGE_COUNT)
)


@dataclass
class FlipOptions(Options):
    flip_average: bool = option(False, FLIP_AVERAGE_HELP)


@dataclass
class WedgeFlipOptions(Options):
    # On by default: on the wedge benchmark (bench/run_wedge.py) the flip average raised
    # the filled cone's mean per-shell correlation with the grand model on every test
    # tomogram, raw (0.31 -> 0.35) and denoised (0.29 -> 0.33).
    flip_average: bool = option(True, FLIP_AVERAGE_HELP)


@dataclass
class DenoiseOptions(Options):
    suffix: str = option('_denoised', 'added to each output name')


@dataclass
class WedgeOptions(Options):
    tilt_range: Optional[Tuple[float, float]] = option(
        None, "the tomograms' tilt range in degrees (default: the model's)", metavar=('MIN', 'MAX')
    )
    tilt_axis: Optional[str] = option(None, "default: the model's", choices=TILT_AXES)
    transition: float = option(
        TRANSITION_DEGREES, "degrees of smooth transition inside the cone's border", ge=0, le=45
    )
    suffix: str = option('_wedge', 'added to each output name')

    def __post_init__(self):
        super().__post_init__()
        if self.tilt_range is not None:
            check_tilt_range(self.tilt_range)


@dataclass
class SimulateOptions(Options):
    variants: int = option(1, 'synthetic tomograms per map', ge=1, le=1000)
    noise_model: str = option(DEFAULT_NOISE_MODEL, NOISE_MODEL_HELP, choices=NOISE_MODELS)
    seed: int = option(0, 'random seed', ge=0)
    first_index: int = option(
        0,
        'index of the first input among all the maps of a run '
        '(maps simulated in separate calls then draw separate '
        'noise)',
        ge=0,
    )


@dataclass
class ModelInfoOptions(Options):
    model: str = option(
        None,
        'model file (%s) or training checkpoint (%s)' % (MODEL_FILE, CHECKPOINT_FILE),
        required=True,
        positional=True,
    )
    output: Optional[str] = option(None, 'also write the JSON to this file')


@dataclass
class PickOptions(Options):
    tomogram: str = option(None, 'MRC tomogram', required=True, positional=True)
    outdir: str = option(
        None,
        'folder for NAME%s, NAME%s, NAME%s and NAME%s (NAME: --tomo-name or '
        "the tomogram's file stem)"
        % (PICKS_SUFFIX, STAR_SUFFIX, DYNAMO_SUFFIX, PICK_SUMMARY_SUFFIX),
        required=True,
        positional=True,
    )
    diameter: float = option(None, 'particle diameter in A', required=True, gt=0)
    top: Optional[int] = option(
        None,
        'keep the N best picks (default %d without --threshold)' % DEFAULT_TOP,
        ge=1,
        exclusive='selection',
    )
    threshold: Optional[float] = option(
        None,
        "keep picks with DoG score >= T (score in units of the tomogram's standard deviation)",
        exclusive='selection',
    )
    min_distance: Optional[float] = option(
        None,
        'A between picks, non-maximum suppression (default %g x the diameter)' % NMS_FRACTION,
        ge=0,
    )
    polarity: str = option(
        AUTO_POLARITY,
        'bright: particles denser = brighter than background '
        '(DUAL outputs, phantoms); dark: raw reconstructions; auto: measured on the '
        "tomogram (the sign of the skewness of its DoG response at the particle's scale)",
        choices=(AUTO_POLARITY,) + POLARITIES,
    )
    fallback_polarity: str = option(
        'dark',
        'contrast --polarity auto takes when the tomogram does not show one clearly '
        '(dark: that of raw reconstructions)',
        choices=POLARITIES,
    )
    mask: Optional[str] = option(None, "MRC mask of the tomogram's shape: pick where > 0.5")
    margin: Optional[float] = option(
        None,
        'A from the volume faces where nothing is picked (default %g x the diameter)'
        % MARGIN_FRACTION,
        ge=0,
    )
    voxel_size: Optional[float] = option(
        None, 'voxel size of the tomogram in A, if its header is wrong', gt=0
    )
    tomo_name: Optional[str] = option(None, 'rlnTomoName and file prefix (default: file stem)')
    tomo_index: int = option(1, 'Dynamo table column 20', ge=1)
    formats: Tuple[str, ...] = option(PICK_FORMATS, 'tables to write', choices=PICK_FORMATS)
    threads: int = option(1, 'FFT threads', ge=1)
    overwrite: bool = option(False, 'replace tables that exist already')

    def __post_init__(self):
        super().__post_init__()
        if self.tomo_name is not None:
            check_tomo_name(self.tomo_name)
        if self.voxel_size is not None:
            check_diameter(self.diameter, self.voxel_size)


@dataclass
class PhantomOptions(Options):
    outdir: str = option(
        None,
        'folder for reconstruction.mrc, grandmodel.mrc, masks and particle list',
        required=True,
        positional=True,
    )
    shape: Tuple[int, int, int] = option(
        (64, 256, 256), 'volume size', ge=8, le=4096, metavar=('Z', 'Y', 'X')
    )
    voxel_size: float = option(10.0, 'Angstrom per voxel', gt=0)
    seed: int = option(0, 'random seed', ge=0)
    tilt_range: Tuple[float, float] = option(
        (-60.0, 60.0), 'tilt range in degrees', ge=-90, le=90, metavar=('MIN', 'MAX')
    )
    tilt_step: float = option(3.0, 'degrees between tilts', gt=0)
    defocus: float = option(3.0, 'defocus in micrometres, underfocus positive')
    dose: float = option(100.0, 'total dose over the tilt series, e/A^2', gt=0)
    voltage: float = option(300.0, 'kV', gt=0)
    cs: float = option(2.7, 'spherical aberration in mm', ge=0)
    amplitude_contrast: float = option(0.07, 'amplitude contrast fraction', ge=0, le=1)
    classes: Optional[Tuple[str, ...]] = option(
        None, 'macromolecule classes to pack (default: all)'
    )
    particles: Optional[int] = option(None, 'number of macromolecules to try to place', ge=0)
    noise_free: bool = option(
        False, 'also write reconstruction_noisefree.mrc: same optics and wedge, no noise'
    )
    halves: bool = option(
        False,
        'also write reconstruction_even.mrc and reconstruction_odd.mrc: half tomograms of '
        'half the dose each (each tilt\'s counts split in two, as frames are)',
    )
    vesicles: Optional[int] = option(
        None, 'number of vesicles to try to place (default: one per (120 nm)^2 of area)', ge=0
    )
    fiducials: Optional[int] = option(
        None, 'number of gold beads to try to place (default: one per (120 nm)^2, at least 2)', ge=0
    )
    defocus_jitter: float = option(
        0.1, 'per-tilt spread (sigma) of the defocus in micrometres', ge=0
    )
    contrast_volts: float = option(
        1.0,
        'effective potential contrast of unit density in '
        'volts; sets the SNR (1.0: Pearson ~0.17 with the '
        'grand model)',
        gt=0,
    )


@dataclass
class EvaluateVolumesOptions(Options):
    reference: str = option(
        None, 'ground truth MRC (e.g. grandmodel.mrc)', required=True, positional=True
    )
    volumes: Tuple[str, ...] = option(
        None, "MRC volumes on the reference's grid", required=True, positional=True
    )
    ssim_window: int = option(7, 'SSIM window side in voxels', ge=3)


@dataclass
class EvaluatePicksOptions(Options):
    picks: str = option(
        None,
        'coordinate table (x y z score) or SHREC particle list',
        required=True,
        positional=True,
    )
    truth: str = option(None, 'SHREC particle_locations.txt', required=True, positional=True)
    voxel_size: float = option(None, 'Angstrom per voxel of both lists', required=True, gt=0)
    distance: Optional[float] = option(
        None,
        'match radius in Angstrom for one-to-one distance '
        'matching (give --distance, --occupancy or both)',
        gt=0,
    )
    occupancy: Optional[str] = option(
        None, 'occupancy_mask.mrc for the SHREC 2021 hit criterion (labels = lines of TRUTH)'
    )
    exclude: Tuple[str, ...] = option(
        ('vesicle', 'fiducial'), 'ground-truth classes left out of scoring'
    )


# Command -> (help, option classes). The job-file keys of a command are the fields of
# its classes (DualConfig: those with cli=True).
COMMANDS = {
    'phantom': ('simulate a SHREC-2021-like tomogram with its ground truth', (PhantomOptions,)),
    'train': (
        'train DUAL on unpaired noisy and clean volumes',
        (TrainOptions, TrainingRunOptions, DualConfig, RunOptions),
    ),
    'wedge-train': (
        'train a missing-wedge model on the tomograms themselves',
        (WedgeTrainOptions, TrainingRunOptions, DualConfig, RunOptions),
    ),
    'denoise': (
        'denoise tomograms with a trained model',
        (InferenceOptions, DenoiseOptions, FlipOptions, RunOptions),
    ),
    'wedge': (
        'fill the missing wedge of tomograms with a wedge model',
        (InferenceOptions, WedgeOptions, WedgeFlipOptions, RunOptions),
    ),
    'simulate': (
        'synthetic tomograms from clean density maps (a SHREC model folder\'s %s brings '
        'its labels: %s, written beside each synthetic tomogram as <its name>_<file>)'
        % (LABELLED_MAP_NAME, ', '.join(LABEL_FILES)),
        (InferenceOptions, SimulateOptions, RunOptions),
    ),
    'model-info': ("a model file's settings and training summary, as JSON", (ModelInfoOptions,)),
    'pick': ("template-free DoG particle picking (the paper's DoG picker)", (PickOptions,)),
    'evaluate volumes': (
        'PSNR, SSIM and Pearson of volumes against a reference',
        (EvaluateVolumesOptions,),
    ),
    'evaluate picks': ('precision, recall and F1 of picked coordinates', (EvaluatePicksOptions,)),
}


def command_fields(command):
    """[(option class, field)] of a command's options, in declaration order. Each name
    is declared by one class only: it is one key of the command's job files."""
    result = [(cls, f) for cls in COMMANDS[command][1] for f in option_fields(cls)]
    names = [f.name for _, f in result]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise TypeError('%s declares %s twice' % (command, ', '.join(duplicated)))
    return result


class Job:
    """A command's checked options: attribute access to every option (default filled
    in), `given` (the names the caller set) and `config()` for training commands."""

    def __init__(self, command, values):
        if command not in COMMANDS:
            raise InputError('unknown command %r' % command)
        if not isinstance(values, dict):
            raise InputError('a job must be a JSON object of option names and values')
        known = {f.name: cls for cls, f in command_fields(command)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise InputError(
                'unknown option(s) for %s: %s (known: %s)'
                % (command, ', '.join(unknown), ', '.join(sorted(known)))
            )
        self.command, self.given = command, frozenset(values)
        self._parts = {}
        for cls in COMMANDS[command][1]:
            mine = {
                name: values[name]
                for name, owner in known.items()
                if owner is cls and name in values
            }
            self._parts[cls] = cls(**mine)

    def __getattr__(self, name):
        for part in self.__dict__.get('_parts', {}).values():
            if name in part.__dataclass_fields__:
                return getattr(part, name)
        raise AttributeError(name)

    def config(self, **task):
        """The DualConfig of a training command: the given settings over the defaults."""
        given = {
            f.name: getattr(self, f.name) for f in option_fields(DualConfig) if f.name in self.given
        }
        given.update(task)
        return DualConfig(**given)

    def to_json(self, given_only=True):
        """The job as a JSON-ready dict (only the given options by default)."""
        out = {}
        for cls, f in command_fields(self.command):
            if f.name in self.given or not given_only:
                out[f.name] = _jsonable(getattr(self, f.name))
        return out


def make_job(command, **values):
    """The job file content for `command`: `values` checked exactly as the engine will
    check them (InputError otherwise). None values are left out."""
    return Job(command, {k: v for k, v in values.items() if v is not None}).to_json()


def check_values(command, **values):
    """Check some of a command's options (None: not set), as the engine would; returns
    the error message or None. For forms, which know only part of a job."""
    fields = dict((f.name, (cls, f)) for cls, f in command_fields(command))
    try:
        for name, value in values.items():
            if value is None:
                continue
            if name not in fields:
                raise InputError('unknown option %r for %s' % (name, command))
            cls, f = fields[name]
            coerce(name, value, typing.get_type_hints(cls)[name], f.metadata)
    except InputError as err:
        return str(err)
    return None


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def to_json(instance):
    return {f.name: _jsonable(getattr(instance, f.name)) for f in dataclasses.fields(instance)}


def polarity_text(summary):
    """One line on the contrast a pick used and how it was decided (a pick summary or
    dog_pick's info)."""
    source = summary['polarity_source']
    if source == 'given':
        return '%s contrast (given)' % summary['polarity']
    return '%s contrast (auto: skewness %+.2f of the DoG response at the particle scale%s)' % (
        summary['polarity'],
        summary['polarity_skewness'],
        '' if source == 'data' else ', unclear below %.2f: the fallback' % POLARITY_MIN_SKEW,
    )
