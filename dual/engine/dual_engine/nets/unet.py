import torch
from torch import nn

from dual_engine.contract import unet_receptive_radius


def conv_block(in_channels, out_channels):
    """Two 3x3x3 convolutions with LeakyReLU. No normalisation layer: per-sample
    statistics would differ between 32^3 training patches and large inference tiles."""
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, 3, padding=1),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv3d(out_channels, out_channels, 3, padding=1),
        nn.LeakyReLU(0.2, inplace=True),
    )


def upsampler(in_channels, out_channels, upsampling):
    """Twice the resolution (contract.UNET_UPSAMPLINGS). 'linear': a 1x1x1 convolution, then
    trilinear interpolation (linear maps that commute: convolving at the low
    resolution costs an eighth). 'transposed': every output voxel of a 2x2x2 block gets
    its own kernel, which leaves a period-2 pattern in the output."""
    if upsampling == 'transposed':
        return nn.ConvTranspose3d(in_channels, out_channels, 2, stride=2)
    if upsampling == 'linear':
        return nn.Sequential(
            nn.Conv3d(in_channels, out_channels, 1),
            nn.Upsample(scale_factor=2, mode='trilinear', align_corners=False),
        )
    raise ValueError('unknown upsampling %r' % upsampling)


class UNet3D(nn.Module):
    """A 3-D U-Net: `depth` poolings, `width` channels at the top, doubled per level.
    Input sides must be multiples of 2**depth (`UNet3D.multiple`)."""

    def __init__(self, width=16, depth=2, in_channels=1, out_channels=1, upsampling='transposed'):
        super().__init__()
        self.depth = depth
        self.upsampling = upsampling
        self.multiple = 2**depth
        widths = [width * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList()
        channels = in_channels
        for w in widths[:-1]:
            self.down.append(conv_block(channels, w))
            channels = w
        self.pool = nn.MaxPool3d(2)
        self.bottom = conv_block(widths[-2], widths[-1])
        self.upsample = nn.ModuleList()
        self.up = nn.ModuleList()
        for w_low, w in zip(widths[:0:-1], widths[-2::-1]):
            self.upsample.append(upsampler(w_low, w, upsampling))
            self.up.append(conv_block(2 * w, w))
        self.head = nn.Conv3d(widths[0], out_channels, 1)

    @property
    def receptive_radius(self):
        """Voxels from the centre of the receptive field to its edge (an upper bound;
        contract.unet_receptive_radius, which the forms' tile-size rule uses too)."""
        return unet_receptive_radius(self.depth, self.upsampling)

    def forward(self, x):
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for upsample, block, skip in zip(self.upsample, self.up, reversed(skips)):
            x = block(torch.cat([upsample(x), skip], dim=1))
        return self.head(x)
