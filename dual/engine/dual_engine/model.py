"""DUAL's two cycles (paper, eqs. 1-2) and the model file that holds a trained model."""
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from dual_engine.io import InputError
from dual_engine.nets import (DomainDiscriminator, NoiseDecoder, NoiseEncoder, UNet3D,
                              orthogonal_init)
from dual_engine.nets.noise import permute_voxels

MODEL_FORMAT = 'dual-model-1'


@dataclass
class DualConfig:
    """Everything that defines a DUAL model and its training. Defaults: the paper where
    it gives a value (optimiser, loss weights, 32^3 subvolumes, 1 nm voxels); measured
    choices elsewhere (see README, "Engine defaults")."""
    voxel_size: float = 10.0          # working voxel size, A (paper: 1 nm)
    subvolume_size: int = 32          # paper: 32^3
    unet_width: int = 16
    unet_depth: int = 2
    code_size: int = 16               # K, the noise code dimension
    noise_width: int = 16
    disc_width: int = 16
    batch_size: int = 4
    iterations: int = 2000
    lr: float = 1e-4
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 1e-6
    lambda_rec: float = 1.0
    lambda_adv: float = 1.0
    lambda_kl: float = 0.1
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 200
    # 'denoise': noisy tomograms <-> clean volumes (paper, Methods). 'wedge': tomograms
    # <-> the same tomograms with the beam axis and the in-plane axis swapped, the
    # missing-wedge translation of the paper's Fig. 6 (see wedge.py).
    task: str = 'denoise'
    tilt_axis: str = 'y'              # of the noisy domain's volumes: 'y' or 'x'
    tilt_range: tuple = (-60.0, 60.0)  # degrees; used by the wedge task only

    def __post_init__(self):
        if self.task not in ('denoise', 'wedge'):
            raise InputError("task must be 'denoise' or 'wedge' (got %r)" % (self.task,))
        if self.tilt_axis not in ('x', 'y'):
            raise InputError("tilt axis must be 'x' or 'y' (got %r)" % (self.tilt_axis,))
        self.betas = tuple(self.betas)
        self.tilt_range = tuple(float(t) for t in self.tilt_range)

    def to_dict(self):
        d = asdict(self)
        d['betas'] = list(self.betas)
        d['tilt_range'] = list(self.tilt_range)
        return d

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise InputError('unknown DUAL settings: %s' % ', '.join(sorted(unknown)))
        return cls(**values)


class DualGenerators(nn.Module):
    """Dn, Gs, Gn and E, with one forward pass computing both cycles.

    One module (and so one DistributedDataParallel wrapper) for all four networks:
    each network is used twice per iteration, which DDP handles inside one forward.
    """

    def __init__(self, cfg):
        super().__init__()
        self.denoiser = UNet3D(cfg.unet_width, cfg.unet_depth)                 # Dn
        self.structural_generator = UNet3D(cfg.unet_width, cfg.unet_depth)     # Gs
        self.noise_decoder = NoiseDecoder(cfg.code_size, cfg.subvolume_size,
                                          cfg.noise_width)                     # Gn
        self.noise_encoder = NoiseEncoder(cfg.code_size, cfg.noise_width)      # E
        self.code_size = cfg.code_size

    def simulate(self, clean, z, generator=None):
        """Eq. 1: t_f = Gs(v_r + P(Gn(z)))."""
        return self.structural_generator(clean + permute_voxels(self.noise_decoder(z), generator))

    def forward(self, noisy, clean, z, generator=None):
        fake_noisy = self.simulate(clean, z, generator)               # t_f
        rec_clean = self.denoiser(fake_noisy)                         # v_hat = Dn(t_f)
        fake_clean = self.denoiser(noisy)                             # v_f = Dn(t_r)
        code = self.noise_encoder(noisy)                              # E(t_r)
        rec_noisy = self.structural_generator(
            fake_clean + self.noise_decoder(code))                    # eq. 2: t_hat
        return {'fake_noisy': fake_noisy, 'rec_clean': rec_clean,
                'fake_clean': fake_clean, 'rec_noisy': rec_noisy, 'code': code}


class DualDiscriminators(nn.Module):
    """D_t (noisy domain) and D_v (clean domain)."""

    def __init__(self, cfg):
        super().__init__()
        self.noisy = DomainDiscriminator(cfg.disc_width)   # D_t
        self.clean = DomainDiscriminator(cfg.disc_width)   # D_v

    def forward(self, noisy, clean):
        return self.noisy(noisy), self.clean(clean)


def build(cfg):
    torch.manual_seed(cfg.seed)
    return orthogonal_init(DualGenerators(cfg)), orthogonal_init(DualDiscriminators(cfg))


def load_model(path, map_location='cpu'):
    """Read a model file (or a training checkpoint) -> (config, state dict)."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise InputError('model file not found: %s' % path)
    except Exception as err:
        raise InputError('%s is not a DUAL model file: %s' % (path, err))
    if not isinstance(state, dict) or state.get('format') != MODEL_FORMAT:
        raise InputError('%s is not a DUAL model file (format %r)'
                         % (path, state.get('format') if isinstance(state, dict) else None))
    return DualConfig.from_dict(state['config']), state


def load_generators(path, device='cpu'):
    """The trained generator networks of a model file, in eval mode."""
    cfg, state = load_model(path)
    generators = DualGenerators(cfg)
    generators.load_state_dict(state['generators'])
    return cfg, generators.to(device).eval()


def resolve_device(device):
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; a clear error for a missing GPU."""
    if device in (None, 'auto'):
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise InputError('device %s requested but CUDA is not available' % device)
    return device
