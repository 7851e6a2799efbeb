"""DUAL's losses (paper, Methods eqs. 4-9) against values derived here from the formulas.

Expected values come from numpy re-implementations of the documented formulas or from
closed forms worked out by hand; nothing is copied from a run of the code under test.
"""

import math

import numpy as np
import pytest
import torch

from dual_engine.losses import (
    EPS,
    discriminator_loss,
    generator_adversarial_loss,
    noise_code_kl,
    reconstruction_loss,
)


def t64(array):
    return torch.tensor(np.asarray(array), dtype=torch.float64)


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


# ------------------------------------------------------------- reconstruction (eqs. 4-5)


def np_reconstruction(target, estimate):
    """log(MSE) + log(1 - Pearson) per volume (numpy's corrcoef), mean over the batch."""
    values = []
    for t, e in zip(target, estimate):
        t, e = t.ravel(), e.ravel()
        mse = np.mean((t - e) ** 2)
        r = np.corrcoef(t, e)[0, 1]
        values.append(np.log(mse + EPS) + np.log(1 - r + EPS))
    return float(np.mean(values))


def test_reconstruction_loss_is_the_documented_formula():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(3, 1, 4, 5, 6))
    estimate = 0.7 * target + 0.5 * rng.normal(size=target.shape) + 0.2
    got = reconstruction_loss(t64(target), t64(estimate)).item()
    assert got == pytest.approx(np_reconstruction(target, estimate), rel=1e-6)


def test_reconstruction_loss_of_a_negated_volume_by_hand():
    # t has zero mean; e = -t: Pearson = -1, so 1 - r = 2, and MSE = mean((2t)^2) = 4 mean(t^2)
    t = np.array([1.0, -2.0, 3.0, -2.0, 0.0, 0.0]).reshape(1, 1, 1, 2, 3)
    expected = math.log(4 * np.mean(t**2) + EPS) + math.log(2 + EPS)
    assert reconstruction_loss(t64(t), t64(-t)).item() == pytest.approx(expected, rel=1e-6)


def test_reconstruction_loss_averages_volumes_over_the_batch():
    rng = np.random.default_rng(1)
    target = rng.normal(size=(2, 1, 3, 4, 5))
    estimate = target + rng.normal(size=target.shape) * np.array([0.1, 2.0]).reshape(2, 1, 1, 1, 1)
    per_volume = [
        reconstruction_loss(t64(target[i : i + 1]), t64(estimate[i : i + 1])).item()
        for i in range(2)
    ]
    both = reconstruction_loss(t64(target), t64(estimate)).item()
    assert both == pytest.approx(np.mean(per_volume), rel=1e-9)
    assert per_volume[0] < per_volume[1]  # the closer estimate has the lower loss


def test_reconstruction_loss_decreases_as_the_estimate_approaches_the_target():
    rng = np.random.default_rng(2)
    target = rng.normal(size=(2, 1, 4, 4, 4))
    noise = rng.normal(size=target.shape)
    losses = [
        reconstruction_loss(t64(target), t64(target + s * noise)).item()
        for s in (3.0, 1.0, 0.3, 0.1, 0.0)
    ]
    assert all(a > b for a, b in zip(losses, losses[1:])), losses
    # at the target both logs bottom out near log(EPS): MSE = 0 and 1 - Pearson ~ 0
    assert losses[-1] == pytest.approx(2 * math.log(EPS), abs=0.1)


# ------------------------------------------------------------------ adversarial (eqs. 6-8)


def np_discriminator(real_branches, fake_branches):
    """sum over branches of mean(-log D(real)) + mean(-log(1 - D(fake))), D = sigmoid."""
    return float(
        sum(
            np.mean(-np.log(np_sigmoid(r))) + np.mean(-np.log(1 - np_sigmoid(f)))
            for r, f in zip(real_branches, fake_branches)
        )
    )


def np_generator(fake_branches):
    """sum over branches of mean(-log D(fake))."""
    return float(sum(np.mean(-np.log(np_sigmoid(f))) for f in fake_branches))


def branches(rng, scale=1.5):
    """Logits of a spatial (B, 1) and a spectral (B, 1, 3, 3) branch."""
    return [scale * rng.normal(size=(4, 1)), scale * rng.normal(size=(4, 1, 3, 3))]


def test_discriminator_loss_is_the_documented_formula():
    rng = np.random.default_rng(3)
    real, fake = branches(rng), branches(rng)
    got = discriminator_loss([t64(r) for r in real], [t64(f) for f in fake]).item()
    assert got == pytest.approx(np_discriminator(real, fake), rel=1e-9)


def test_generator_loss_is_the_documented_formula():
    rng = np.random.default_rng(4)
    fake = branches(rng)
    got = generator_adversarial_loss([t64(f) for f in fake]).item()
    assert got == pytest.approx(np_generator(fake), rel=1e-9)


def test_adversarial_losses_at_perfect_undecided_and_worst_discriminators():
    big = 30.0  # D = sigmoid(+-30) is 1 or 0 up to ~1e-13
    ones = [torch.ones(4, 1, dtype=torch.float64), torch.ones(4, 1, 3, 3, dtype=torch.float64)]
    # perfect discriminator: D(real) = 1, D(fake) = 0 -> no discriminator loss, and the
    # generator pays -log(0+) = 30 per branch
    assert discriminator_loss([big * o for o in ones], [-big * o for o in ones]).item() < 1e-9
    assert generator_adversarial_loss([-big * o for o in ones]).item() == pytest.approx(
        2 * big, rel=1e-9
    )
    # undecided discriminator: D = 1/2 everywhere -> 2 log 2 per branch, log 2 for G
    zeros = [0 * o for o in ones]
    assert discriminator_loss(zeros, zeros).item() == pytest.approx(2 * 2 * math.log(2), rel=1e-12)
    assert generator_adversarial_loss(zeros).item() == pytest.approx(2 * math.log(2), rel=1e-12)
    # worst discriminator (real called fake, fake called real): 30 + 30 per branch, and a
    # fully fooled discriminator costs the generator nothing
    assert discriminator_loss(
        [-big * o for o in ones], [big * o for o in ones]
    ).item() == pytest.approx(2 * 2 * big, rel=1e-9)
    assert generator_adversarial_loss([big * o for o in ones]).item() < 1e-9


def test_gradients_push_the_right_way():
    rng = np.random.default_rng(5)
    real = [t64(r).requires_grad_() for r in branches(rng)]
    fake = [t64(f).requires_grad_() for f in branches(rng)]
    discriminator_loss(real, fake).backward()
    for r, f in zip(real, fake):
        n = r.numel()
        # d/dx mean(-log sigmoid(x)) = (sigmoid(x) - 1) / n: raise the real scores
        np.testing.assert_allclose(r.grad.numpy(), (np_sigmoid(r.detach()) - 1) / n, rtol=1e-9)
        n = f.numel()
        # d/dx mean(-log(1 - sigmoid(x))) = sigmoid(x) / n: lower the fake scores
        np.testing.assert_allclose(f.grad.numpy(), np_sigmoid(f.detach()) / n, rtol=1e-9)
        assert (r.grad < 0).all() and (f.grad > 0).all()

    fake_g = [f.detach().clone().requires_grad_() for f in fake]
    loss = generator_adversarial_loss(fake_g)
    loss.backward()
    for f in fake_g:
        # the generator wants the opposite of the discriminator: raise D(fake)
        np.testing.assert_allclose(
            f.grad.numpy(), (np_sigmoid(f.detach()) - 1) / f.numel(), rtol=1e-9
        )
        assert (f.grad < 0).all()
    # and a gradient step does that: fake scores up, generator loss down
    stepped = [(f - 10.0 * f.grad).detach() for f in fake_g]
    assert all((s > f.detach()).all() for s, f in zip(stepped, fake_g))
    assert generator_adversarial_loss(stepped).item() < loss.item()


# --------------------------------------------------------------------- noise code (eq. 9)


def np_kl(codes):
    """KL(N(0, I) || N(mu, Sigma)), Sigma = sample covariance shrunk towards I with
    weight K / (K + B) (the documented estimator), in numpy."""
    codes = np.asarray(codes, dtype=np.float64)
    b, k = codes.shape
    mu = codes.mean(axis=0)
    sample = np.cov(codes, rowvar=False, ddof=1) if b > 1 else np.zeros((k, k))
    w = k / (k + b)
    sigma = (1 - w) * sample + w * np.eye(k)
    inv = np.linalg.inv(sigma)
    sign, logdet = np.linalg.slogdet(sigma)
    assert sign > 0
    return 0.5 * (np.trace(inv) + mu @ inv @ mu - k + logdet)


def kl(codes):
    return noise_code_kl(t64(codes)).item()


def test_kl_matches_numpy_for_small_and_large_batches():
    rng = np.random.default_rng(6)
    for b, k in ((4, 8), (8, 4), (2, 16), (1, 3)):
        codes = 0.3 + 1.7 * rng.normal(size=(b, k)) @ rng.normal(size=(k, k)) / math.sqrt(k)
        assert kl(codes) == pytest.approx(np_kl(codes), rel=1e-9), (b, k)


def test_kl_closed_form_by_hand():
    # K = 2, B = 4 codes m + (+-a, 0), m + (0, +-a): mean m, sample covariance
    # (2 a^2 / 3) I; shrinkage weight 2/6 = 1/3 gives Sigma = s I with
    # s = (2/3)(2 a^2 / 3) + 1/3, and KL = (K / s + |m|^2 / s - K + K ln s) / 2.
    def codes(m, a):
        return np.array(m) + np.array([[a, 0], [-a, 0], [0, a], [0, -a]], dtype=np.float64)

    def by_hand(m, a):
        s = (2 / 3) * (2 * a * a / 3) + 1 / 3
        return 0.5 * (2 / s + np.dot(m, m) / s - 2 + 2 * math.log(s))

    a_unit = math.sqrt(1.5)  # sample covariance exactly I
    assert kl(codes([0.0, 0.0], a_unit)) == pytest.approx(0.0, abs=1e-12)
    assert kl(codes([0.6, -0.8], a_unit)) == pytest.approx(0.5, rel=1e-9)  # |m|^2 / 2
    for m, a in (([0.0, 0.0], 3.0), ([1.0, 2.0], 0.2), ([-0.5, 0.1], 1.0)):
        assert kl(codes(m, a)) == pytest.approx(by_hand(m, a), rel=1e-9), (m, a)


def test_kl_is_near_zero_for_standard_normal_codes():
    rng = np.random.default_rng(7)
    assert 0 <= kl(rng.normal(size=(4000, 4))) < 0.01


def whitened_normal(rng, b, k):
    """B x K normal codes made to have mean exactly 0 and sample covariance exactly I."""
    codes = rng.normal(size=(b, k))
    codes = codes - codes.mean(0)
    return codes @ np.linalg.inv(np.linalg.cholesky(np.cov(codes, rowvar=False))).T


def test_kl_grows_with_a_mean_shift():
    rng = np.random.default_rng(8)
    codes = rng.normal(size=(2000, 4))
    direction = np.array([1.0, -1.0, 0.5, 0.0]) / 1.5  # unit length
    values = [kl(codes + s * direction) for s in (0.0, 0.5, 1.0, 2.0)]
    assert all(a < b for a, b in zip(values, values[1:])), values
    # with Sigma = I exactly the KL is |mu|^2 / 2
    white = whitened_normal(rng, 50, 4)
    for s in (0.5, 1.0, 2.0):
        assert kl(white + s * direction) == pytest.approx(0.5 * s * s, rel=1e-9)


def test_kl_grows_as_the_covariance_moves_away_from_identity():
    rng = np.random.default_rng(9)
    b, k = 2000, 4
    codes = whitened_normal(rng, b, k)
    # mean 0 and sample covariance exactly I, so scaling by c gives Sigma = s I with
    # s = (1 - w) c^2 + w, w = K / (K + B), and KL = K (1/s - 1 + ln s) / 2
    w = k / (k + b)
    values = {}
    for c in (0.25, 0.5, 1.0, 2.0, 4.0):
        s = (1 - w) * c * c + w
        values[c] = kl(c * codes)
        assert values[c] == pytest.approx(0.5 * k * (1 / s - 1 + math.log(s)), rel=1e-6, abs=1e-9)
    assert values[1.0] == pytest.approx(0.0, abs=1e-9)
    assert values[0.25] > values[0.5] > values[1.0] < values[2.0] < values[4.0]


def test_kl_is_finite_with_fewer_codes_than_dimensions_thanks_to_the_shrinkage():
    rng = np.random.default_rng(10)
    b, k = 3, 16
    codes = rng.normal(size=(b, k))
    sample = np.cov(codes, rowvar=False)
    # the unshrunk sample covariance is singular (rank B - 1 < K): eq. 9 taken literally
    # has no finite KL here
    assert np.linalg.matrix_rank(sample) == b - 1
    with pytest.raises(torch.linalg.LinAlgError):
        torch.linalg.cholesky(t64(sample))
    for dtype in (torch.float32, torch.float64):  # float32 is what training uses
        x = torch.tensor(codes, dtype=dtype, requires_grad=True)
        value = noise_code_kl(x)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(x.grad).all()
        assert value.item() == pytest.approx(np_kl(codes), rel=1e-4)


def test_kl_gradient_pulls_the_codes_towards_the_standard_normal():
    rng = np.random.default_rng(11)
    x = t64(3.0 * rng.normal(size=(6, 5)) + 2.0).requires_grad_()
    before = noise_code_kl(x)
    before.backward()
    moved = (x - 0.05 * x.grad).detach()
    assert noise_code_kl(moved).item() < before.item()
    assert moved.mean(0).norm() < x.detach().mean(0).norm()  # the mean goes to 0


# --------------------------------------------------------------------- polarity anchor
def test_polarity_anchor_breaks_the_sign_tie_and_is_zero_once_the_sign_is_right():
    from dual_engine.losses import POLARITY_MARGIN, POLARITY_POOL, polarity_loss

    gen = torch.Generator().manual_seed(0)
    noisy = torch.randn(2, 1, 16, 16, 16, generator=gen, dtype=torch.float64)
    # Perfectly (anti-)correlated: block means correlate +-1 as well.
    assert float(polarity_loss(noisy, noisy, 1.0)) == 0.0
    assert float(polarity_loss(-noisy, noisy, 1.0)) == pytest.approx(1 + POLARITY_MARGIN)
    assert float(polarity_loss(-noisy, noisy, -1.0)) == 0.0
    assert float(polarity_loss(-noisy, noisy, 0.0)) == 0.0
    # Independent numpy value: block means, their correlation per sample, batch mean.
    other = torch.randn(2, 1, 16, 16, 16, generator=gen, dtype=torch.float64)
    blocks = [
        v.numpy()
        .reshape(
            2,
            16 // POLARITY_POOL,
            POLARITY_POOL,
            16 // POLARITY_POOL,
            POLARITY_POOL,
            16 // POLARITY_POOL,
            POLARITY_POOL,
        )
        .mean(axis=(2, 4, 6))
        .reshape(2, -1)
        for v in (other, noisy)
    ]
    r = np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(*blocks)])
    expected = max(0.0, POLARITY_MARGIN - r)
    assert float(polarity_loss(other, noisy, 1.0)) == pytest.approx(expected, abs=1e-6)
    # A gradient step on an inverted output moves it towards the asked sign.
    out = (-noisy).clone().requires_grad_(True)
    polarity_loss(out, noisy, 1.0).backward()
    stepped = out.detach() - 10.0 * out.grad
    assert float(polarity_loss(stepped, noisy, 1.0)) < float(polarity_loss(-noisy, noisy, 1.0))


def test_spectrum_loss_sees_the_missing_wedge_and_teaches_it():
    from dual_engine import wedge
    from dual_engine.losses import spectrum_loss

    torch.manual_seed(0)
    white = torch.randn(4, 1, 16, 16, 16)
    weight = torch.from_numpy(wedge.measured_weight((16, 16, 16), (-60, 60), 'y', 0.0))
    wedged = torch.fft.irfftn(torch.fft.rfftn(white, dim=(2, 3, 4)) * weight, s=(16, 16, 16))
    other = torch.fft.irfftn(
        torch.fft.rfftn(torch.randn(4, 1, 16, 16, 16), dim=(2, 3, 4)) * weight, s=(16, 16, 16)
    )
    # another draw with the same wedge scores far closer than white noise does
    assert spectrum_loss(other, wedged) < 0.5 * spectrum_loss(white, wedged)
    assert float(spectrum_loss(wedged, wedged)) == 0.0
    # its gradient, followed, takes white noise towards the wedged spectrum
    fake = white.clone().requires_grad_(True)
    opt = torch.optim.Adam([fake], lr=0.05)
    start = spectrum_loss(fake, wedged).item()
    for _ in range(30):
        opt.zero_grad()
        spectrum_loss(fake, wedged).backward()
        opt.step()
    assert spectrum_loss(fake, wedged).item() < 0.5 * start
