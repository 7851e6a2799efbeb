"""DUAL engine: unsupervised cryo-ET denoising and simulation (no Scipion imports)."""

__version__ = "0.1.0"
