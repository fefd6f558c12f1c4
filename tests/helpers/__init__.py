"""Helpers shared by the tests: plain functions and classes, no fixtures (those stay in conftest.py).

``tests`` is on the import path through ``pythonpath`` in pyproject.toml, so a test writes
``from helpers.tiny_data import make_tiny_dataset`` with no ``sys.path`` changes and never imports
``conftest``. Subprocesses that need obdb get ``PYTHONPATH`` in the environment they are given.
"""
