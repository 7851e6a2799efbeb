"""DUAL's two cycles (paper, eqs. 1-2) and the model file that holds a trained model."""

import os

import torch
from torch import nn

from dual_engine import spectral
from dual_engine.contract import DualConfig, InputError, torch_seed, unet_upsampling
from dual_engine.nets import (
    DomainDiscriminator,
    NoiseDecoder,
    NoiseEncoder,
    UNet3D,
    orthogonal_init,
)
from dual_engine.nets.noise import permute_voxels

MODEL_FORMAT = 'dual-model-1'


class DualGenerators(nn.Module):
    """Dn, Gs, Gn and E, with one forward pass computing both cycles.

    One module (and so one DistributedDataParallel wrapper) for all four networks:
    each network is used twice per iteration, which DDP handles inside one forward.
    """

    def __init__(self, cfg):
        super().__init__()

        def unet(network):
            upsampling = unet_upsampling(cfg.upsampling, network)
            return UNet3D(cfg.unet_width, cfg.unet_depth, upsampling=upsampling)

        self.denoiser = unet('denoiser')  # Dn
        self.structural_generator = unet('simulator')  # Gs
        self.noise_decoder = NoiseDecoder(
            cfg.code_size, cfg.subvolume_size, cfg.noise_width, scale=cfg.noise_scale
        )  # Gn
        self.noise_encoder = NoiseEncoder(cfg.code_size, cfg.noise_width)  # E
        self.code_size = cfg.code_size

    def simulate(self, clean, z, generator=None):
        """Eq. 1: t_f = Gs(v_r + P(Gn(z)))."""
        return self.structural_generator(clean + permute_voxels(self.noise_decoder(z), generator))

    def forward(self, noisy, clean, z, generator=None):
        fake_noisy = self.simulate(clean, z, generator)  # t_f
        # v_hat = Dn(t_f) and v_f = Dn(t_r) in one pass (one larger batch runs faster)
        rec_clean, fake_clean = self.denoiser(torch.cat([fake_noisy, noisy])).split(
            [len(fake_noisy), len(noisy)]
        )
        code = self.noise_encoder(noisy)  # E(t_r)
        rec_noisy = self.structural_generator(fake_clean + self.noise_decoder(code))  # eq. 2: t_hat
        return {
            'fake_noisy': fake_noisy,
            'rec_clean': rec_clean,
            'fake_clean': fake_clean,
            'rec_noisy': rec_noisy,
            'code': code,
        }


class DualDiscriminators(nn.Module):
    """D_t (noisy domain) and D_v (clean domain)."""

    def __init__(self, cfg):
        super().__init__()
        self.noisy = DomainDiscriminator(cfg.disc_width)  # D_t
        self.clean = DomainDiscriminator(cfg.disc_width)  # D_v

    def forward(self, noisy, clean):
        return self.noisy(noisy), self.clean(clean)


def build(cfg):
    torch.manual_seed(torch_seed(cfg.seed, 'weights'))
    return orthogonal_init(DualGenerators(cfg)), orthogonal_init(DualDiscriminators(cfg))


# What a model file must hold besides the config (train.Trainer.state writes them).
MODEL_KEYS = ('format', 'config', 'iteration')


def load_model(path, map_location='cpu'):
    """Read a model file (or a training checkpoint) -> (config, state dict).

    Model files are untrusted: they are unpickled with weights_only=True, which refuses
    anything but tensors and plain containers, so a crafted file cannot run code."""
    if not os.path.isfile(path):
        raise InputError('model file not found: %s' % path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(
            '%s is not a DUAL model file, or holds more than weights and '
            'settings (refused without running it): %s' % (path, reason)
        )
    if not isinstance(state, dict) or state.get('format') != MODEL_FORMAT:
        raise InputError(
            '%s is not a DUAL model file (format %r)'
            % (path, state.get('format') if isinstance(state, dict) else None)
        )
    missing = [k for k in MODEL_KEYS if k not in state]
    if missing:
        raise InputError(
            '%s is an incomplete DUAL model file (missing %s)' % (path, ', '.join(missing))
        )
    if not isinstance(state['iteration'], int) or state['iteration'] < 0:
        raise InputError('%s has an invalid iteration count %r' % (path, state['iteration']))
    if spectral.of_an_earlier_grid(state.get('spectra')):
        # fitted by an earlier version: the model simulates with the learned noise model
        # until `train --resume` in its folder refits them (require_noise_model says so)
        state['spectra'] = None
    return DualConfig.from_dict(state['config']), state


def load_generators(path, device='cpu'):
    """The trained generator networks of a model file, in eval mode: the moving average
    of their weights where training kept one (DualConfig.weight_average), else the last."""
    cfg, state = load_model(path)
    generators = DualGenerators(cfg)
    weights = state.get('generators_average') or state.get('generators')
    if not isinstance(weights, dict):
        raise InputError('%s holds no trained networks' % path)
    try:
        generators.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise InputError(
            '%s: its weights do not fit its settings (%s)' % (path, str(err).splitlines()[0])
        )
    # The fitted noise model of simulation (spectral.py); models trained before it,
    # checkpoints and snapshots have none.
    spectra = state.get('spectra')
    generators.spectra = None if spectra is None else spectral.checked(spectra, path)
    return cfg, generators.to(device).eval()


def resolve_device(device):
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; a clear error for a missing GPU."""
    if device in (None, 'auto'):
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise InputError('device %s requested but CUDA is not available' % device)
    return device
