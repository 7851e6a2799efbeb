"""Unsupervised DUAL training (paper, Methods): alternate discriminator and generator
updates on unpaired subvolumes, with checkpoints, resumption, a JSON-lines log and
DistributedDataParallel over several processes (GPUs, or CPU processes with gloo).

Files in the output folder:
  checkpoint.pt        the latest checkpoint (written every `checkpoint_every` iterations)
  training_log.jsonl   one JSON object per logged iteration (losses, learning rate,
                       seconds, ETA, and the ground-truth-free signals of monitor.py)
  model.pt             the trained model, written once training reaches its iterations
  snapshots/           iterNNNNN.pt, a model every `snapshot_every` iterations (if set)
  .training.lock       held while a run trains, so a second run in the folder is refused
"""

import contextlib
import copy
import fcntl
import json
import math
import os
import tempfile
import time

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from dual_engine import __version__
from dual_engine.contract import (
    CHECKPOINT_FILE,
    MODEL_FILE,
    NOISE_MODELS,
    TRAINING_LOCK,
    TRAINING_LOG,
    DualConfig,
    InputError,
    SNAPSHOT_DIR,
    RunError,
    check_writable_folder,
    numpy_rng,
    settable_config_fields,
    snapshot_name,
    torch_seed,
)
from dual_engine.cpus import default_threads
from dual_engine.data import Domain, estimate_contrast, load_for_model, wedge_swap_axes
from dual_engine.infer import fit_noise_model
from dual_engine.io import atomic_output, read_mrc
from dual_engine.losses import (
    discriminator_loss,
    generator_adversarial_loss,
    noise_code_kl,
    polarity_loss,
    reconstruction_loss,
    spectrum_loss,
)
from dual_engine.model import MODEL_FORMAT, build, load_model, resolve_device
from dual_engine.monitor import Monitor

# A generator loss above this (or not finite) means the GAN has diverged.
DIVERGED_LOSS = 1e6


def _unwrap(module):
    return module.module if isinstance(module, DistributedDataParallel) else module


class Trainer:
    """Owns the networks, the optimisers and the sampling state of one process."""

    def __init__(self, cfg, noisy, clean, device='cpu', rank=0, world_size=1):
        self.cfg, self.noisy, self.clean = cfg, noisy, clean
        self.device, self.rank, self.world_size = device, rank, world_size
        generators, discriminators = build(cfg)
        # On CPU, oneDNN runs 3-D convolutions faster on channels-last tensors
        # (bench/run_training.py: 1.2-1.5x per iteration).
        self.memory_format = torch.channels_last_3d if device == 'cpu' else torch.contiguous_format
        self.generators = generators.to(device, memory_format=self.memory_format)
        self.discriminators = discriminators.to(device, memory_format=self.memory_format)
        # The weights the model uses: a moving average of the generators' (None: the last).
        self.average = None
        if cfg.weight_average > 0:
            self.average = copy.deepcopy(self.generators).requires_grad_(False)
        adamw = dict(lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
        self.opt_g = torch.optim.AdamW(self.generators.parameters(), **adamw)
        self.opt_d = torch.optim.AdamW(self.discriminators.parameters(), **adamw)
        if world_size > 1:
            ids = [torch.device(device).index] if device.startswith('cuda') else None
            self.generators = DistributedDataParallel(self.generators, device_ids=ids)
            self.discriminators = DistributedDataParallel(self.discriminators, device_ids=ids)
        self.iteration = 0
        self.lr = cfg.lr  # of the last step (learning_rate() sets it)
        # The polarity anchor's sign (losses.polarity_loss); 0: no anchor.
        self.contrast_sign = {'same': 1.0, 'inverted': -1.0}.get(cfg.noisy_contrast, 0.0)
        self._reseed(cfg.seed)

    def _reseed(self, seed):
        # Each process, and each point a run starts from, samples its own subvolumes,
        # noise codes and permutations (streams keyed by rank and iteration).
        self.rng = numpy_rng(seed, 'train', self.rank, self.iteration)
        self.torch_rng = torch.Generator().manual_seed(
            torch_seed(seed, 'train', self.rank, self.iteration)
        )

    # ------------------------------------------------------------------ one iteration
    def learning_rate(self):
        """cfg.lr, falling linearly to zero over the last cfg.lr_decay of the iterations
        (the schedule of pytorch-CycleGAN-and-pix2pix): later snapshots then differ less,
        and the last one is not a random point of the GAN's oscillation."""
        cfg = self.cfg
        decay = cfg.lr_decay * cfg.iterations
        if decay <= 0:
            return cfg.lr
        return cfg.lr * min(1.0, (cfg.iterations - self.iteration) / decay)

    def _batch(self, domain):
        batch = torch.from_numpy(domain.sample(self.rng, self.cfg.batch_size)).to(self.device)
        return batch.contiguous(memory_format=self.memory_format)

    def _update_average(self):
        # Warm-up: early on the average follows the weights closely, so a short run's
        # model is not dragged towards its random initialisation.
        t = self.iteration
        decay = min(self.cfg.weight_average, (1.0 + t) / (10.0 + t))
        with torch.no_grad():
            mine = list(self.average.parameters())
            theirs = [p.detach() for p in _unwrap(self.generators).parameters()]
            torch._foreach_lerp_(mine, theirs, 1.0 - decay)

    def model_generators(self):
        """The generators the model uses (the average, where one is kept)."""
        return self.average if self.average is not None else _unwrap(self.generators)

    def step(self):
        cfg = self.cfg
        self.lr = self.learning_rate()
        for group in self.opt_g.param_groups:
            group['lr'] = self.lr
        for group in self.opt_d.param_groups:
            group['lr'] = self.lr * cfg.disc_lr_factor
        noisy = self._batch(self.noisy)
        clean = self._batch(self.clean)
        z = torch.randn(cfg.batch_size, cfg.code_size, generator=self.torch_rng).to(self.device)
        out = self.generators(noisy, clean, z, generator=self.torch_rng)

        # Discriminators (eqs. 6-7): real against detached fakes, one pass per domain pair.
        n = cfg.batch_size
        d_noisy, d_clean = self.discriminators(
            torch.cat([noisy, out['fake_noisy'].detach()]),
            torch.cat([clean, out['fake_clean'].detach()]),
        )
        real_t, fake_t = [o[:n] for o in d_noisy], [o[n:] for o in d_noisy]
        real_v, fake_v = [o[:n] for o in d_clean], [o[n:] for o in d_clean]
        loss_d = discriminator_loss(real_t, fake_t) + discriminator_loss(real_v, fake_v)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()

        # Generators, encoder and denoiser (eq. 3), against the updated, frozen discriminators.
        critics = _unwrap(self.discriminators)
        critics.requires_grad_(False)
        loss_adv = generator_adversarial_loss(
            critics.noisy(out['fake_noisy'])
        ) + generator_adversarial_loss(critics.clean(out['fake_clean']))
        critics.requires_grad_(True)
        loss_rec_clean = reconstruction_loss(clean, out['rec_clean'])
        loss_rec_noisy = reconstruction_loss(noisy, out['rec_noisy'])
        loss_kl = noise_code_kl(out['code'])
        loss_spectrum = spectrum_loss(out['fake_noisy'], noisy)
        # Both translations keep the contrast: Dn(t) against t, and Gs(v + n) against v
        # (anchoring Dn alone let Gs invert too and the cycle close on an inverted Dn).
        loss_pol = polarity_loss(out['fake_clean'], noisy, self.contrast_sign) + polarity_loss(
            out['fake_noisy'], clean, self.contrast_sign
        )
        loss_g = (
            cfg.lambda_rec * (loss_rec_clean + loss_rec_noisy)
            + cfg.lambda_adv * loss_adv
            + cfg.lambda_kl * loss_kl
            + cfg.lambda_spectrum * loss_spectrum
            + cfg.lambda_polarity * loss_pol
        )
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        if self.average is not None:
            self._update_average()
        self.iteration += 1
        return {
            'loss': loss_g.item(),
            'rec_clean': loss_rec_clean.item(),
            'rec_noisy': loss_rec_noisy.item(),
            'adv': loss_adv.item(),
            'kl': loss_kl.item(),
            'spectrum': loss_spectrum.item(),
            'polarity': loss_pol.item(),
            'disc': loss_d.item(),
        }

    # ------------------------------------------------------------------ state
    def state(self, extra=None):
        state = {
            'format': MODEL_FORMAT,
            'engine_version': __version__,
            'config': self.cfg.to_dict(),
            'iteration': self.iteration,
            'generators': _unwrap(self.generators).state_dict(),
            'generators_average': None if self.average is None else self.average.state_dict(),
            'discriminators': _unwrap(self.discriminators).state_dict(),
            'opt_g': self.opt_g.state_dict(),
            'opt_d': self.opt_d.state_dict(),
            'rng': {'numpy': self.rng.bit_generator.state, 'torch': self.torch_rng.get_state()},
        }
        state.update(extra or {})
        return state

    def load_state(self, state, restore_rng=True):
        _unwrap(self.generators).load_state_dict(state['generators'])
        if self.average is not None:  # a model trained without an average starts one
            self.average.load_state_dict(state.get('generators_average') or state['generators'])
        _unwrap(self.discriminators).load_state_dict(state['discriminators'])
        self.opt_g.load_state_dict(state['opt_g'])
        self.opt_d.load_state_dict(state['opt_d'])
        self.iteration = state['iteration']
        if restore_rng and self.rank == 0:
            self.rng.bit_generator.state = state['rng']['numpy']
            self.torch_rng.set_state(state['rng']['torch'])
        else:
            self._reseed(self.cfg.seed)


def save(state, path):
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def _truncate_log(path, iteration):
    """Keep the log lines up to `iteration`, so a resumed run does not repeat entries;
    a line torn by a crash (not JSON) is dropped."""
    if not os.path.exists(path):
        return
    lines = []
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get('iteration', math.inf) <= iteration:
                lines.append(line if line.endswith('\n') else line + '\n')
    with atomic_output(path) as tmp, open(tmp, 'w') as f:
        f.writelines(lines)


def _prepare_config(outdir, cfg, resume, init_model, given=frozenset()):
    """The run's config and the state to start from (None for a fresh start).

    given: the settings the caller set explicitly. Continuing (a checkpoint or a model)
    keeps the saved network and training settings; one given with another value is
    refused rather than silently ignored."""
    checkpoint = os.path.join(outdir, CHECKPOINT_FILE)
    if resume and os.path.exists(checkpoint):
        saved_cfg, state = load_model(checkpoint)
        _refuse_changes(saved_cfg, cfg, given, ('schedule',), checkpoint)
        for f in settable_config_fields('schedule'):
            setattr(saved_cfg, f.name, getattr(cfg, f.name))
        return saved_cfg, state, True
    if init_model:
        saved_cfg, state = load_model(init_model)
        _refuse_changes(saved_cfg, cfg, given, ('schedule', 'task'), init_model)
        # The weights (and architecture) come from the model; the task is this run's.
        for f in settable_config_fields('schedule') + [
            f for f in _all_fields() if f.metadata.get('role') == 'task'
        ]:
            setattr(saved_cfg, f.name, getattr(cfg, f.name))
        if state['iteration'] >= saved_cfg.iterations:
            raise InputError(
                '%s has trained %d iterations already, not fewer than the %d '
                'asked for: ask for more iterations'
                % (init_model, state['iteration'], saved_cfg.iterations)
            )
        return saved_cfg, state, False
    return cfg, None, False


def _all_fields():
    import dataclasses

    return list(dataclasses.fields(DualConfig))


def _refuse_changes(saved, cfg, given, kept_roles, source):
    changed = [
        f.name
        for f in settable_config_fields()
        if f.name in given
        and f.metadata.get('role') not in kept_roles
        and getattr(cfg, f.name) != 'auto'  # resolved when the run began
        and getattr(saved, f.name) != getattr(cfg, f.name)
    ]
    if changed:
        raise InputError(
            '%s was trained with other settings (%s): a continued run keeps '
            'them; leave them out, or train afresh in another folder'
            % (
                source,
                ', '.join(
                    '%s %s, not %s' % (n, getattr(saved, n), getattr(cfg, n)) for n in changed
                ),
            )
        )


def _worker(
    rank,
    world_size,
    init_file,
    noisy_paths,
    clean_paths,
    outdir,
    cfg_dict,
    resume,
    init_model,
    device,
    threads,
    noisy_voxel_size,
    clean_voxel_size,
    given,
    noisy_halves,
):
    if threads:
        torch.set_num_threads(threads)
    if device.startswith('cuda') and world_size > 1:
        device = 'cuda:%d' % rank
    if world_size > 1:
        backend = 'nccl' if device.startswith('cuda') else 'gloo'
        dist.init_process_group(
            backend, init_method='file://' + init_file, rank=rank, world_size=world_size
        )
    try:
        return _train_process(
            rank,
            world_size,
            noisy_paths,
            clean_paths,
            outdir,
            DualConfig.from_dict(cfg_dict),
            resume,
            init_model,
            device,
            noisy_voxel_size,
            clean_voxel_size,
            given,
            noisy_halves,
        )
    finally:
        if world_size > 1:
            dist.destroy_process_group()


def _train_process(
    rank,
    world_size,
    noisy_paths,
    clean_paths,
    outdir,
    cfg,
    resume,
    init_model,
    device,
    noisy_voxel_size,
    clean_voxel_size,
    given,
    noisy_halves,
):
    cfg, state, same_run = _prepare_config(outdir, cfg, resume, init_model, given)
    noisy = Domain(
        'noisy',
        noisy_paths,
        cfg.voxel_size,
        cfg.subvolume_size,
        noisy_voxel_size,
        tilt_axis=cfg.tilt_axis,
    )
    # The wedge task's second domain is the first one with two axes swapped (wedge.py).
    swap = wedge_swap_axes(cfg.tilt_axis) if cfg.task == 'wedge' else None
    clean = Domain(
        'clean',
        clean_paths,
        cfg.voxel_size,
        cfg.subvolume_size,
        clean_voxel_size,
        tilt_axis=cfg.tilt_axis,
        swap_axes=swap,
    )
    if cfg.noisy_contrast == 'auto':  # resolved once, then stored with the model
        cfg.noisy_contrast, skews = estimate_contrast(noisy, clean)
        if rank == 0:
            print(
                'Particle contrast of the noisy volumes: %s (low-pass skewness %.2f noisy, '
                '%.2f clean)' % (cfg.noisy_contrast, skews[0], skews[1]),
                flush=True,
            )
    trainer = Trainer(cfg, noisy, clean, device, rank, world_size)
    log_path = os.path.join(outdir, TRAINING_LOG)
    if state is not None:
        trainer.load_state(state, restore_rng=same_run and world_size == 1)
        if rank == 0:
            print(
                'Continuing from iteration %d (%s)'
                % (trainer.iteration, 'checkpoint' if same_run else init_model),
                flush=True,
            )
    if rank == 0:
        _truncate_log(log_path, trainer.iteration)
    monitor = Monitor(noisy, clean, cfg, device) if rank == 0 else None
    start, first = time.time(), trainer.iteration
    losses = {}
    while trainer.iteration < cfg.iterations:
        losses = _checked_step(trainer, outdir)
        it = trainer.iteration
        if rank != 0:
            continue
        if it % cfg.log_every == 0 or it == cfg.iterations:
            elapsed = time.time() - start
            per_it = elapsed / (it - first)
            record = dict(
                iteration=it,
                iterations=cfg.iterations,
                seconds=round(elapsed, 2),
                eta_seconds=round(per_it * (cfg.iterations - it), 1),
                lr=trainer.lr,  # of the last step
                **{k: round(v, 5) for k, v in losses.items()},
                **{k: round(v, 5) for k, v in monitor.signals(trainer.model_generators()).items()},
            )
            with open(log_path, 'a') as f:
                f.write(json.dumps(record) + '\n')
            print(
                'iteration %d/%d  loss %.4f  rec %.3f/%.3f  adv %.3f  kl %.3f  disc %.3f  '
                'ETA %s'
                % (
                    it,
                    cfg.iterations,
                    losses['loss'],
                    losses['rec_clean'],
                    losses['rec_noisy'],
                    losses['adv'],
                    losses['kl'],
                    losses['disc'],
                    _hms(record['eta_seconds']),
                ),
                flush=True,
            )
        if it % cfg.checkpoint_every == 0 and it < cfg.iterations:
            save(trainer.state(), os.path.join(outdir, CHECKPOINT_FILE))
        if cfg.snapshot_every and it % cfg.snapshot_every == 0:
            os.makedirs(os.path.join(outdir, SNAPSHOT_DIR), exist_ok=True)
            save(trainer.state(), os.path.join(outdir, SNAPSHOT_DIR, snapshot_name(it)))
    spread = _replica_spread(trainer.generators) if world_size > 1 else 0.0
    summary = None
    if rank == 0:
        summary = {
            'iterations': trainer.iteration,
            'seconds': round(time.time() - start, 1),
            'final_losses': losses,
            'noisy_volumes': list(noisy_paths),
            'clean_volumes': list(clean_paths),
            'processes': world_size,
            'device': device,
            'replica_weight_spread': spread,
        }
        # Checkpoint first: a crash between the two writes leaves a final checkpoint,
        # from which --resume writes the model without training again.
        save(trainer.state(), os.path.join(outdir, CHECKPOINT_FILE))
        extra = {'training': summary}
        if cfg.task == 'denoise':
            print('Fitting the noise model of simulation', flush=True)
            halves = None
            if noisy_halves:  # at the working voxel size, as the noisy volumes
                halves = [
                    tuple(load_for_model(p, cfg.voxel_size, noisy_voxel_size)[0] for p in pair)
                    for pair in noisy_halves
                ]
            extra['spectra'] = fit_noise_model(
                trainer.model_generators(),
                noisy.volumes,
                clean.volumes,
                cfg,
                device,
                cfg.seed,
                halves,
            )
            # where the noise model's share of structure per frequency comes from
            summary['noise_share'] = 'even/odd halves' if halves else 'learned simulator'
            summary['noisy_halves'] = [list(pair) for pair in noisy_halves or []]
            summary['noise_models'] = list(NOISE_MODELS)  # what `simulate` can use
        save(trainer.state(extra), os.path.join(outdir, MODEL_FILE))
    if world_size > 1:
        # Every rank waits for rank 0's files, then all leave together: a rank that tears
        # its process group down while a peer still works aborted the run (gloo on CPU:
        # "terminate called without an active exception", SIGABRT).
        dist.barrier()
    return summary


def _checked_step(trainer, outdir):
    """One iteration; a diverged GAN stops the run with a clear message (the last
    checkpoint, written before the divergence, is kept)."""
    try:
        losses = trainer.step()
    except torch.linalg.LinAlgError:
        losses = {'loss': math.nan}
    if not all(math.isfinite(v) for v in losses.values()) or losses['loss'] > DIVERGED_LOSS:
        raise RunError(
            'training diverged at iteration %d (generator loss %s): the last '
            'checkpoint in %s is from before; try a lower learning rate or '
            'other loss weights' % (trainer.iteration, losses['loss'], outdir)
        )
    return losses


def _replica_spread(generators):
    """Largest difference of a weight checksum between processes: 0 when DDP kept the
    replicas in sync, as it must."""
    checksum = torch.stack([p.detach().double().sum() for p in generators.parameters()]).sum()
    gathered = [torch.zeros_like(checksum) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, checksum)
    return float(max(gathered) - min(gathered))


def _hms(seconds):
    seconds = int(seconds)
    return '%d:%02d:%02d' % (seconds // 3600, seconds % 3600 // 60, seconds % 60)


def train(
    noisy_paths,
    clean_paths,
    outdir,
    cfg=None,
    resume=False,
    init_model=None,
    device='auto',
    threads=None,
    processes=1,
    noisy_voxel_size=None,
    clean_voxel_size=None,
    overwrite=False,
    given=None,
    noisy_halves=None,
):
    """Train DUAL on unpaired noisy and clean volumes; returns the training summary.

    processes > 1 runs DistributedDataParallel: one process per GPU on CUDA, or CPU
    processes with the gloo backend. resume continues from outdir/checkpoint.pt if there
    is one; init_model starts from the weights and iteration count of a model file.
    An earlier run in outdir is never replaced unless overwrite is set; given: the
    settings the caller set (default: all of cfg), see _prepare_config. noisy_halves:
    the even and odd half tomograms of each noisy volume, in order (two paths per
    volume), on which the fitted noise model of simulation measures its share of
    structure (spectral.measured_share; without them the learned simulator's share).
    """
    cfg = cfg or DualConfig()
    noisy_halves = _checked_halves(noisy_halves, noisy_paths, noisy_voxel_size, cfg)
    given = frozenset(f.name for f in _all_fields()) if given is None else frozenset(given)
    device = resolve_device(device)
    if device.startswith('cuda') and processes > torch.cuda.device_count():
        raise InputError(
            '%d processes requested but only %d GPU(s) are visible'
            % (processes, torch.cuda.device_count())
        )
    if resume and init_model and os.path.exists(os.path.join(outdir, CHECKPOINT_FILE)):
        init_model = None  # the checkpoint is further along than the model it started from
    _check_outdir(outdir, resume, overwrite)
    if not threads:  # processes on one CPU share its cores
        threads = default_threads()
        threads = threads if device.startswith('cuda') else max(1, threads // processes)
        print('Using %d CPU thread(s) per process' % threads, flush=True)
    args = (
        list(noisy_paths),
        list(clean_paths),
        outdir,
        cfg.to_dict(),
        resume,
        init_model,
        device,
        threads,
        noisy_voxel_size,
        clean_voxel_size,
        given,
        noisy_halves,
    )
    with training_lock(outdir):
        if overwrite:
            for name in (CHECKPOINT_FILE, MODEL_FILE, TRAINING_LOG):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(outdir, name))
        if processes == 1:
            return _worker(0, 1, None, *args)
        with tempfile.TemporaryDirectory() as tmp:
            init_file = os.path.join(tmp, 'ddp_init')
            torch.multiprocessing.spawn(
                _worker, args=(processes, init_file) + args, nprocs=processes, join=True
            )
    return load_model(os.path.join(outdir, MODEL_FILE))[1]['training']


def _checked_halves(halves, noisy_paths, voxel_size, cfg):
    """The noisy volumes' even/odd halves as (even, odd) pairs, or None; InputError
    unless there are two per volume, each of its volume's shape and voxel size."""
    if not halves:
        return None
    if cfg.task != 'denoise':
        raise InputError(
            'even/odd halves serve the noise model of simulation, which only '
            'denoise training fits (this is %s training)' % cfg.task
        )
    if len(halves) != 2 * len(noisy_paths):
        raise InputError(
            'give two halves (even, odd) per noisy volume: %d volumes, %d halves'
            % (len(noisy_paths), len(halves))
        )
    pairs = [tuple(halves[2 * i : 2 * i + 2]) for i in range(len(noisy_paths))]
    for path, pair in zip(noisy_paths, pairs):
        if len({os.path.realpath(p) for p in (path,) + pair}) < 3:
            raise InputError(
                '%s: its halves must be two other files (given: %s)' % (path, ', '.join(pair))
            )
        data, size = read_mrc(path)
        for half in pair:
            half_data, half_size = read_mrc(half)
            if half_data.shape != data.shape:
                raise InputError(
                    '%s: shape %s, but its tomogram %s is %s'
                    % (half, half_data.shape, path, data.shape)
                )
            if not voxel_size and not np.isclose(half_size, size, rtol=1e-3):
                raise InputError(
                    '%s: voxel size %g A in its header, but its tomogram %s says %g A'
                    % (half, half_size, path, size)
                )
    return pairs


def _check_outdir(outdir, resume, overwrite):
    """A training folder must be new, or be continued (resume), or be replaced on
    request (overwrite); anything else would erase a finished model and its log."""
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise InputError('%s exists and is not a folder' % outdir)
    earlier = [
        n
        for n in (MODEL_FILE, CHECKPOINT_FILE, TRAINING_LOG)
        if os.path.exists(os.path.join(outdir, n))
    ]
    if earlier and not (resume or overwrite):
        raise InputError(
            '%s holds an earlier run (%s): continue it with --resume, replace '
            'it with --overwrite, or choose another folder' % (outdir, ', '.join(earlier))
        )
    check_writable_folder(outdir, create=True)


@contextlib.contextmanager
def training_lock(outdir):
    """Hold outdir's lock for the whole run; a second run in the folder is refused."""
    path = os.path.join(outdir, TRAINING_LOCK)
    with open(path, 'a') as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InputError(
                'another training is running in %s (it holds %s); wait for it '
                'or train in another folder' % (outdir, path)
            )
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
