"""Headless tests of the DUAL plugin. Test data comes from the engine's phantom simulator."""
