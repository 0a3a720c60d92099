"""The setuptools entry beside pyproject.toml, for tools that look for setup.py.

Every piece of metadata (name, version, dependencies, extras, the tf-unilth
command) is in pyproject.toml, the one source; this file adds nothing.
"""

from setuptools import setup

setup()
