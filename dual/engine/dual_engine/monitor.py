"""Signals of a model's quality that need no ground truth, logged while it trains
(bench/run_training.py compares them, at each snapshot, with SSIM against the truth).

Both are measured on a fixed set of subvolumes drawn once per run from the training
domains (their own random stream, so training samples the same with or without them):

  monitor_cycle     1 - Pearson(t, Gs(Dn(t) + Gn(E(t)))): how well the denoised volume
                    and its noise code explain the noisy input (the cycle of eq. 2)
  monitor_spectrum  mean absolute difference of the radially averaged log-amplitude
                    spectra of Dn(t) and of the clean subvolumes: whether the output
                    looks like the clean domain in Fourier space (residual noise raises
                    the high frequencies, blur lowers them)
Lower is better for both.
"""

import torch

from dual_engine.contract import numpy_rng
from dual_engine.losses import pearson

MONITOR_COUNT = 16  # subvolumes per domain


def radial_log_amplitude(batch):
    """Mean log amplitude per integer frequency radius (DC excluded) of a batch of
    (n, 1, s, s, s) volumes, each standardised first."""
    x = batch.flatten(1)
    x = (x - x.mean(dim=1, keepdim=True)) / (x.std(dim=1, keepdim=True) + 1e-6)
    x = x.view_as(batch)
    amplitude = torch.fft.rfftn(x.float(), dim=(-3, -2, -1)).abs().mean(dim=(0, 1))
    s = batch.shape[-1]
    freqs = [torch.fft.fftfreq(s) * s] * 2 + [torch.fft.rfftfreq(s) * s]
    grid = torch.meshgrid(*freqs, indexing='ij')
    radius = torch.sqrt(sum(g**2 for g in grid)).round().long().to(amplitude.device)
    keep = (radius > 0) & (radius <= s // 2)
    sums = torch.zeros(s // 2 + 1, device=amplitude.device).index_add_(
        0, radius[keep], amplitude[keep]
    )
    counts = torch.zeros_like(sums).index_add_(0, radius[keep], torch.ones_like(amplitude[keep]))
    return torch.log(sums[1:] / counts[1:] + 1e-6)


class Monitor:
    """The fixed subvolumes of one run and the signals of a generator set on them."""

    def __init__(self, noisy, clean, cfg, device='cpu'):
        rng = numpy_rng(cfg.seed, 'monitor')
        self.noisy = torch.from_numpy(noisy.sample(rng, MONITOR_COUNT)).to(device)
        self.clean_spectrum = radial_log_amplitude(
            torch.from_numpy(clean.sample(rng, MONITOR_COUNT)).to(device)
        )

    @torch.no_grad()
    def signals(self, generators):
        denoised = generators.denoiser(self.noisy)
        noise = generators.noise_decoder(generators.noise_encoder(self.noisy))
        cycled = generators.structural_generator(denoised + noise)
        spectrum = radial_log_amplitude(denoised) - self.clean_spectrum
        return {
            'monitor_cycle': float((1 - pearson(self.noisy, cycled)).mean()),
            'monitor_spectrum': float(spectrum.abs().mean()),
        }
