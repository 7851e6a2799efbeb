"""The six networks of DUAL (paper, Fig. 1): denoiser Dn and structural generator Gs
(3-D U-Nets), noise encoder E and noise decoder Gn, and one discriminator per domain
with a spatial and a spectral (Fourier amplitude) branch."""

from dual_engine.nets.unet import UNet3D
from dual_engine.nets.noise import NoiseEncoder, NoiseDecoder
from dual_engine.nets.discriminator import DomainDiscriminator
from dual_engine.nets.init import orthogonal_init

__all__ = ['UNet3D', 'NoiseEncoder', 'NoiseDecoder', 'DomainDiscriminator', 'orthogonal_init']
