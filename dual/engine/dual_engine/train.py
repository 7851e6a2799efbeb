"""Unsupervised DUAL training (paper, Methods): alternate discriminator and generator
updates on unpaired subvolumes, with checkpoints, resumption, a JSON-lines log and
DistributedDataParallel over several processes (GPUs, or CPU processes with gloo).

Files in the output folder:
  checkpoint.pt        the latest checkpoint (written every `checkpoint_every` iterations)
  training_log.jsonl   one JSON object per logged iteration (losses, seconds, ETA)
  model.pt             the trained model, written once training reaches its iterations
"""
import json
import os
import tempfile
import time

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from dual_engine import __version__
from dual_engine.data import Domain, wedge_swap_axes
from dual_engine.io import InputError, atomic_output
from dual_engine.losses import (discriminator_loss, generator_adversarial_loss,
                                noise_code_kl, reconstruction_loss)
from dual_engine.model import MODEL_FORMAT, DualConfig, build, load_model, resolve_device

CHECKPOINT = 'checkpoint.pt'
MODEL = 'model.pt'
LOG = 'training_log.jsonl'


def _unwrap(module):
    return module.module if isinstance(module, DistributedDataParallel) else module


class Trainer:
    """Owns the networks, the optimisers and the sampling state of one process."""

    def __init__(self, cfg, noisy, clean, device='cpu', rank=0, world_size=1):
        self.cfg, self.noisy, self.clean = cfg, noisy, clean
        self.device, self.rank, self.world_size = device, rank, world_size
        generators, discriminators = build(cfg)
        self.generators = generators.to(device)
        self.discriminators = discriminators.to(device)
        adamw = dict(lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
        self.opt_g = torch.optim.AdamW(self.generators.parameters(), **adamw)
        self.opt_d = torch.optim.AdamW(self.discriminators.parameters(), **adamw)
        if world_size > 1:
            ids = [torch.device(device).index] if device.startswith('cuda') else None
            self.generators = DistributedDataParallel(self.generators, device_ids=ids)
            self.discriminators = DistributedDataParallel(self.discriminators, device_ids=ids)
        self.iteration = 0
        self._reseed(cfg.seed)

    def _reseed(self, seed):
        # Each process samples its own subvolumes, noise codes and permutations.
        self.rng = np.random.default_rng([seed, self.rank, self.iteration])
        self.torch_rng = torch.Generator().manual_seed(seed * 1000 + self.rank + self.iteration)

    # ------------------------------------------------------------------ one iteration
    def step(self):
        cfg = self.cfg
        noisy = torch.from_numpy(self.noisy.sample(self.rng, cfg.batch_size)).to(self.device)
        clean = torch.from_numpy(self.clean.sample(self.rng, cfg.batch_size)).to(self.device)
        z = torch.randn(cfg.batch_size, cfg.code_size, generator=self.torch_rng).to(self.device)
        out = self.generators(noisy, clean, z, generator=self.torch_rng)

        # Discriminators (eqs. 6-7): real against detached fakes, one pass per domain pair.
        n = cfg.batch_size
        d_noisy, d_clean = self.discriminators(
            torch.cat([noisy, out['fake_noisy'].detach()]),
            torch.cat([clean, out['fake_clean'].detach()]))
        real_t, fake_t = [o[:n] for o in d_noisy], [o[n:] for o in d_noisy]
        real_v, fake_v = [o[:n] for o in d_clean], [o[n:] for o in d_clean]
        loss_d = discriminator_loss(real_t, fake_t) + discriminator_loss(real_v, fake_v)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()

        # Generators, encoder and denoiser (eq. 3), against the updated, frozen discriminators.
        critics = _unwrap(self.discriminators)
        critics.requires_grad_(False)
        loss_adv = (generator_adversarial_loss(critics.noisy(out['fake_noisy'])) +
                    generator_adversarial_loss(critics.clean(out['fake_clean'])))
        critics.requires_grad_(True)
        loss_rec_clean = reconstruction_loss(clean, out['rec_clean'])
        loss_rec_noisy = reconstruction_loss(noisy, out['rec_noisy'])
        loss_kl = noise_code_kl(out['code'])
        loss_g = (cfg.lambda_rec * (loss_rec_clean + loss_rec_noisy) +
                  cfg.lambda_adv * loss_adv + cfg.lambda_kl * loss_kl)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.iteration += 1
        return {'loss': loss_g.item(), 'rec_clean': loss_rec_clean.item(),
                'rec_noisy': loss_rec_noisy.item(), 'adv': loss_adv.item(),
                'kl': loss_kl.item(), 'disc': loss_d.item()}

    # ------------------------------------------------------------------ state
    def state(self, extra=None):
        state = {'format': MODEL_FORMAT, 'engine_version': __version__,
                 'config': self.cfg.to_dict(), 'iteration': self.iteration,
                 'generators': _unwrap(self.generators).state_dict(),
                 'discriminators': _unwrap(self.discriminators).state_dict(),
                 'opt_g': self.opt_g.state_dict(), 'opt_d': self.opt_d.state_dict(),
                 'rng': {'numpy': self.rng.bit_generator.state,
                         'torch': self.torch_rng.get_state()}}
        state.update(extra or {})
        return state

    def load_state(self, state, restore_rng=True):
        _unwrap(self.generators).load_state_dict(state['generators'])
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
    """Keep the log lines up to `iteration`, so a resumed run does not repeat entries."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [line for line in f if line.strip() and json.loads(line)['iteration'] <= iteration]
    with atomic_output(path) as tmp, open(tmp, 'w') as f:
        f.writelines(lines)


def _prepare_config(outdir, cfg, resume, init_model):
    """The run's config and the state to start from (None for a fresh start)."""
    checkpoint = os.path.join(outdir, CHECKPOINT)
    if resume and os.path.exists(checkpoint):
        saved_cfg, state = load_model(checkpoint)
        # Architecture and sampling come from the checkpoint; the target may grow.
        saved_cfg.iterations = cfg.iterations
        return saved_cfg, state, True
    if init_model:
        saved_cfg, state = load_model(init_model)
        # The weights (and architecture) come from the model; the task is this run's.
        for name in ('iterations', 'log_every', 'checkpoint_every', 'task', 'tilt_axis',
                     'tilt_range'):
            setattr(saved_cfg, name, getattr(cfg, name))
        return saved_cfg, state, False
    return cfg, None, False


def _worker(rank, world_size, init_file, noisy_paths, clean_paths, outdir, cfg_dict,
            resume, init_model, device, threads, noisy_voxel_size, clean_voxel_size):
    if threads:
        torch.set_num_threads(threads)
    if device.startswith('cuda') and world_size > 1:
        device = 'cuda:%d' % rank
    if world_size > 1:
        backend = 'nccl' if device.startswith('cuda') else 'gloo'
        dist.init_process_group(backend, init_method='file://' + init_file,
                                rank=rank, world_size=world_size)
    try:
        return _train_process(rank, world_size, noisy_paths, clean_paths, outdir,
                              DualConfig.from_dict(cfg_dict), resume, init_model, device,
                              noisy_voxel_size, clean_voxel_size)
    finally:
        if world_size > 1:
            dist.destroy_process_group()


def _train_process(rank, world_size, noisy_paths, clean_paths, outdir, cfg, resume,
                   init_model, device, noisy_voxel_size, clean_voxel_size):
    cfg, state, same_run = _prepare_config(outdir, cfg, resume, init_model)
    noisy = Domain('noisy', noisy_paths, cfg.voxel_size, cfg.subvolume_size, noisy_voxel_size,
                   tilt_axis=cfg.tilt_axis)
    # The wedge task's second domain is the first one with two axes swapped (wedge.py).
    swap = wedge_swap_axes(cfg.tilt_axis) if cfg.task == 'wedge' else None
    clean = Domain('clean', clean_paths, cfg.voxel_size, cfg.subvolume_size, clean_voxel_size,
                   tilt_axis=cfg.tilt_axis, swap_axes=swap)
    trainer = Trainer(cfg, noisy, clean, device, rank, world_size)
    log_path = os.path.join(outdir, LOG)
    if state is not None:
        trainer.load_state(state, restore_rng=same_run and world_size == 1)
        if rank == 0:
            print('Continuing from iteration %d (%s)' % (trainer.iteration,
                  'checkpoint' if same_run else init_model), flush=True)
    if rank == 0:
        _truncate_log(log_path, trainer.iteration)
    start, first = time.time(), trainer.iteration
    losses = {}
    while trainer.iteration < cfg.iterations:
        losses = trainer.step()
        it = trainer.iteration
        if rank != 0:
            continue
        if it % cfg.log_every == 0 or it == cfg.iterations:
            elapsed = time.time() - start
            per_it = elapsed / (it - first)
            record = dict(iteration=it, iterations=cfg.iterations, seconds=round(elapsed, 2),
                          eta_seconds=round(per_it * (cfg.iterations - it), 1),
                          **{k: round(v, 5) for k, v in losses.items()})
            with open(log_path, 'a') as f:
                f.write(json.dumps(record) + '\n')
            print('iteration %d/%d  loss %.4f  rec %.3f/%.3f  adv %.3f  kl %.3f  disc %.3f  '
                  'ETA %s' % (it, cfg.iterations, losses['loss'], losses['rec_clean'],
                              losses['rec_noisy'], losses['adv'], losses['kl'],
                              losses['disc'], _hms(record['eta_seconds'])), flush=True)
        if it % cfg.checkpoint_every == 0 and it < cfg.iterations:
            save(trainer.state(), os.path.join(outdir, CHECKPOINT))
    spread = _replica_spread(trainer.generators) if world_size > 1 else 0.0
    if rank == 0:
        summary = {'iterations': trainer.iteration, 'seconds': round(time.time() - start, 1),
                   'final_losses': losses, 'noisy_volumes': list(noisy_paths),
                   'clean_volumes': list(clean_paths), 'processes': world_size,
                   'device': device, 'replica_weight_spread': spread}
        save(trainer.state({'training': summary}), os.path.join(outdir, MODEL))
        save(trainer.state(), os.path.join(outdir, CHECKPOINT))
        return summary


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


def train(noisy_paths, clean_paths, outdir, cfg=None, resume=False, init_model=None,
          device='auto', threads=None, processes=1, noisy_voxel_size=None,
          clean_voxel_size=None):
    """Train DUAL on unpaired noisy and clean volumes; returns the training summary.

    processes > 1 runs DistributedDataParallel: one process per GPU on CUDA, or CPU
    processes with the gloo backend. resume continues from outdir/checkpoint.pt if there
    is one; init_model starts from the weights and iteration count of a model file.
    """
    cfg = cfg or DualConfig()
    device = resolve_device(device)
    if processes < 1:
        raise InputError('processes must be at least 1')
    if device.startswith('cuda') and processes > torch.cuda.device_count():
        raise InputError('%d processes requested but only %d GPU(s) are visible'
                         % (processes, torch.cuda.device_count()))
    if cfg.subvolume_size % 8:
        raise InputError('the subvolume size must be a multiple of 8 (got %d)' % cfg.subvolume_size)
    if cfg.batch_size < 2:
        raise InputError('the batch size must be at least 2 (the noise-code KL term '
                         'needs a batch covariance)')
    os.makedirs(outdir, exist_ok=True)
    args = (noisy_paths, clean_paths, outdir, cfg.to_dict(), resume, init_model, device,
            threads, noisy_voxel_size, clean_voxel_size)
    if processes == 1:
        return _worker(0, 1, None, *args)
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, 'ddp_init')
        torch.multiprocessing.spawn(_worker, args=(processes, init_file) + args,
                                    nprocs=processes, join=True)
    return load_model(os.path.join(outdir, MODEL))[1]['training']
