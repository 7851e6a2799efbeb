"""DUAL's losses (paper, eqs. 3-9), each written once, and the polarity anchor."""

import torch
import torch.nn.functional as F

EPS = 1e-6


def pearson(a, b):
    """Pearson correlation of each pair of batch samples."""
    a, b = a.flatten(1), b.flatten(1)
    ac = a - a.mean(dim=1, keepdim=True)
    bc = b - b.mean(dim=1, keepdim=True)
    return (ac * bc).sum(dim=1) / (ac.norm(dim=1) * bc.norm(dim=1) + EPS)


def reconstruction_loss(target, estimate):
    """Eqs. 4-5: log(MSE) + log(1 - Pearson), per volume, averaged over the batch."""
    mse = ((target.flatten(1) - estimate.flatten(1)) ** 2).mean(dim=1)
    return (torch.log(mse + EPS) + torch.log(1 - pearson(target, estimate) + EPS)).mean()


# Polarity anchor: correlation measured on POLARITY_POOL^3 block means, where the
# particles stand out of the noise, and asked to reach POLARITY_MARGIN with its sign.
POLARITY_POOL = 4
POLARITY_MARGIN = 0.2


def polarity_loss(denoised, noisy, sign):
    """Anchor of the output's contrast (not in the paper): relu(margin - sign * r), r
    the batch mean correlation of Dn(t) with t after POLARITY_POOL^3 block averaging.

    Nothing in eqs. 3-9 tells a denoiser that keeps the particles' contrast from one
    that inverts it (the cycle undoes either), so an unanchored run picks one by chance.
    sign +1: the noisy volumes show particles with the clean volumes' contrast; -1: the
    opposite (raw reconstructions against density maps); 0: no anchor. The term is
    zero once the sign is right with a small margin, so it only breaks the tie.
    """
    if not sign:
        return denoised.new_zeros(())
    pooled = [F.avg_pool3d(v, POLARITY_POOL) for v in (denoised, noisy)]
    return torch.relu(POLARITY_MARGIN - sign * pearson(*pooled).mean())


def _bce(logits, real):
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def discriminator_loss(real_outputs, fake_outputs):
    """Eqs. 6-7 for one domain: -log D(real) - log(1 - D(fake)), summed over the
    discriminator's branches (spatial and spectral)."""
    return sum(_bce(r, True) + _bce(f, False) for r, f in zip(real_outputs, fake_outputs))


def generator_adversarial_loss(fake_outputs):
    """One domain's term of eq. 8: -log D(fake), summed over the branches."""
    return sum(_bce(f, True) for f in fake_outputs)


def log_power_spectrum(volumes):
    """Log of the batch-mean 3-D power spectrum (rfftn grid, each volume standardised,
    smoothed over 3^3 neighbouring frequencies so that a batch of a few volumes gives a
    steady estimate); shape (s, s, s // 2 + 1)."""
    x = volumes.flatten(1)
    x = ((x - x.mean(dim=1, keepdim=True)) / (x.std(dim=1, keepdim=True) + EPS)).view_as(volumes)
    power = torch.fft.rfftn(x.float(), dim=(-3, -2, -1)).abs().pow(2).mean(dim=(0, 1))
    smooth = F.avg_pool3d(power[None, None], 3, stride=1, padding=1, count_include_pad=False)
    smooth = smooth[0, 0]
    # a floor at 1e-3 of the mean: an empty missing cone counts as 30 dB down, not -inf
    return torch.log(smooth + 1e-3 * smooth.mean())


def spectrum_loss(simulated, real):
    """Not in the paper: mean absolute difference of the log power spectra
    (log_power_spectrum) of simulated and real noisy subvolumes, DC excluded.

    The spectral discriminator alone did not teach Gs the data's spectrum within a
    short training (bench/run_realism.py: the simulations' missing wedge lay across the
    wrong axis, their noise correlated along the wrong ones); this term asks for the
    batch's mean spectrum directly: the wedge, the CTF and the noise's colour."""
    diff = (log_power_spectrum(simulated) - log_power_spectrum(real).detach()).abs()
    return (diff.sum() - diff[0, 0, 0]) / (diff.numel() - 1)


def noise_code_kl(codes):
    """Eq. 9: KL(N(0, I_K) || N(mu, Sigma)) with mu, Sigma the batch mean and covariance
    of the encoder's codes.

    A training batch usually has fewer samples than code dimensions, which leaves the
    sample covariance singular; it is shrunk towards the identity (the target
    covariance) with weight K / (K + B), which keeps the KL finite and is consistent
    when the codes really are N(0, I).
    """
    batch, k = codes.shape
    mu = codes.mean(dim=0)
    centred = codes - mu
    sample_cov = centred.T @ centred / max(batch - 1, 1)
    shrink = k / float(k + batch)
    eye = torch.eye(k, dtype=codes.dtype, device=codes.device)
    sigma = (1 - shrink) * sample_cov + shrink * eye
    chol = torch.linalg.cholesky(sigma)
    sigma_inv = torch.cholesky_inverse(chol)
    logdet = 2 * torch.log(torch.diagonal(chol)).sum()
    return 0.5 * (torch.trace(sigma_inv) + mu @ sigma_inv @ mu - k + logdet)
