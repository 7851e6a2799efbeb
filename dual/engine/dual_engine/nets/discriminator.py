import torch
from torch import nn


def patch_critic(width, levels):
    """A 3-D PatchGAN: strided convolutions down to a grid of real/fake logits."""
    layers, channels = [], 1
    for level in range(levels):
        out = width * 2**level
        layers += [
            nn.Conv3d(channels, out, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        channels = out
    layers.append(nn.Conv3d(channels, 1, 3, padding=1))
    return nn.Sequential(*layers)


def log_amplitude(x):
    """Centred log Fourier amplitude of each volume: where CTF zeros and the missing wedge show."""
    amplitude = torch.fft.fftshift(torch.fft.fftn(x, dim=(2, 3, 4)).abs(), dim=(2, 3, 4))
    log_amp = torch.log1p(amplitude)
    mean = log_amp.mean(dim=(2, 3, 4), keepdim=True)
    std = log_amp.std(dim=(2, 3, 4), keepdim=True) + 1e-6
    return (log_amp - mean) / std


class DomainDiscriminator(nn.Module):
    """D_t or D_v: a spatial branch on the volume and a spectral branch on its Fourier
    amplitudes. Returns both grids of logits; the adversarial loss uses both."""

    def __init__(self, width=16, levels=3):
        super().__init__()
        self.spatial = patch_critic(width, levels)
        self.spectral = patch_critic(width, levels)

    def forward(self, x):
        return self.spatial(x), self.spectral(log_amplitude(x))
