"""Viewers of the DUAL plugin."""

from dual.viewers.viewers import (
    DualTrainingViewer,
    DualDenoiseViewer,
    DualSimulateViewer,
    DualWedgeViewer,
)
from dual.viewers.viewer_picks import DualPicksViewer
