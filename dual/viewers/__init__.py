"""Viewers of the DUAL plugin."""
