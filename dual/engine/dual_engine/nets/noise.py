import torch
from torch import nn


class NoiseEncoder(nn.Module):
    """E: noisy volume -> noise code z in R^K (strided convolutions, global average pool)."""

    def __init__(self, code_size=16, width=16, levels=3):
        super().__init__()
        layers, channels = [], 1
        for level in range(levels):
            out = width * 2**level
            layers += [
                nn.Conv3d(channels, out, 4, stride=2, padding=1),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            channels = out
        self.features = nn.Sequential(*layers)
        self.to_code = nn.Linear(channels, code_size)

    def forward(self, x):
        return self.to_code(self.features(x).mean(dim=(2, 3, 4)))


class NoiseDecoder(nn.Module):
    """Gn: noise code z -> non-structural noise volume of side `size` (a multiple of 8)."""

    def __init__(self, code_size=16, size=32, width=16, levels=3, scale=0.0):
        super().__init__()
        self.scale = scale  # DualConfig.noise_scale
        if size % 2**levels:
            raise ValueError('noise volume side %d is not a multiple of %d' % (size, 2**levels))
        self.base = size // 2**levels
        self.channels = width * 2 ** (levels - 1)
        self.from_code = nn.Linear(code_size, self.channels * self.base**3)
        layers, channels = [], self.channels
        for level in reversed(range(levels)):
            out = max(width * 2 ** (level - 1), 8) if level else width
            layers += [
                nn.ConvTranspose3d(channels, out, 2, stride=2),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv3d(out, out, 3, padding=1),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            channels = out
        layers.append(nn.Conv3d(channels, 1, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, z):
        x = self.from_code(z).view(-1, self.channels, self.base, self.base, self.base)
        noise = self.body(x)
        if not self.scale:
            return noise
        # each volume's noise at a fixed standard deviation: see DualConfig.noise_scale
        flat = noise.flatten(1)
        flat = (flat - flat.mean(dim=1, keepdim=True)) / (flat.std(dim=1, keepdim=True) + 1e-6)
        return self.scale * flat.view_as(noise)


def permute_voxels(volumes, generator=None):
    """P in eq. (1): an independent random permutation of the voxels of each volume,
    which keeps the noise's value distribution and removes any spatial structure."""
    batch = volumes.shape[0]
    flat = volumes.reshape(batch, -1)
    order = torch.argsort(torch.rand(flat.shape, generator=generator, device=volumes.device), dim=1)
    return torch.gather(flat, 1, order).view_as(volumes)
