"""Readers of the files the engine writes, for protocols and viewers (no torch here)."""
import json
import os

# Loss columns of the engine's training log (dual_engine.train), in display order.
LOSS_KEYS = ('loss', 'rec_clean', 'rec_noisy', 'adv', 'kl', 'disc')
LOSS_LABELS = {'loss': 'total (generators)', 'rec_clean': 'reconstruction, clean cycle',
               'rec_noisy': 'reconstruction, noisy cycle', 'adv': 'adversarial (generators)',
               'kl': 'noise-code KL', 'disc': 'discriminators'}


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
