"""Readers of the files the engine writes and coordinate conversions, for protocols and
viewers (no torch here)."""

import json
import math
import os

import numpy as np

# Loss columns of the engine's training log (dual_engine.train), in display order.
LOSS_KEYS = (
    'loss',
    'rec_clean',
    'rec_noisy',
    'adv',
    'kl',
    'spectrum',
    'polarity',
    'disc',
)
# Also in the training log and plotted with the losses: quality signals and the rate.
SIGNAL_KEYS = ('monitor_cycle', 'monitor_spectrum', 'lr')
LOSS_LABELS = {
    'loss': 'total (generators)',
    'rec_clean': 'reconstruction, clean cycle',
    'rec_noisy': 'reconstruction, noisy cycle',
    'adv': 'adversarial (generators)',
    'kl': 'noise-code KL',
    'spectrum': 'simulation spectrum',
    'polarity': 'polarity anchor',
    'disc': 'discriminators',
    # quality signals without ground truth (the engine's monitor.py), lower is better
    'monitor_cycle': 'quality: cycle error (no ground truth)',
    'monitor_spectrum': 'quality: spectrum distance (no ground truth)',
    'lr': 'learning rate',
}


def readTrainingLog(path):
    """The records of a training_log.jsonl (one dict per logged iteration: iteration,
    iterations, seconds, eta_seconds and the losses); [] if there is no log yet.
    A line being written while we read is skipped."""
    if not os.path.exists(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


def formatDuration(seconds):
    """'1h 02m', '3m 05s' or '12s'."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return '%dh %02dm' % (seconds // 3600, seconds % 3600 // 60)
    if seconds >= 60:
        return '%dm %02ds' % (seconds // 60, seconds % 60)
    return '%ds' % seconds


def convertPositions(xyz, fromTomo, toTomo):
    """BOTTOM_LEFT_CORNER pixel positions in `fromTomo` -> the same points in `toTomo`,
    through Scipion's physical frame (origin shifts in A; the module doc of
    dual/protocols/protocol_pick.py derives it)."""
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    fromShifts = np.array(fromTomo.getShiftsFromOrigin(), dtype=np.float64)
    toShifts = np.array(toTomo.getShiftsFromOrigin(), dtype=np.float64)
    return (xyz * fromTomo.getSamplingRate() + fromShifts - toShifts) / toTomo.getSamplingRate()


def defaultBoxSize(diameter, samplingRate):
    """The particle diameter in pixels, rounded up to an even number."""
    return int(2 * math.ceil(round(diameter / samplingRate / 2.0, 6)))
