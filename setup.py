from setuptools import setup

setup()  # pyproject.toml holds the metadata; this is for tools that still call setup.py
