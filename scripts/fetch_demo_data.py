#!/usr/bin/env python3
"""Fetch the demo data set (DeepForest sample images, tiled, as CVAT XML) into data/demo.

    python3 scripts/fetch_demo_data.py [--out data/demo] [--tile-size 320] [--wheel PATH]

A thin wrapper around :func:`obdb.demo.main`; all logic lives in the package so it is tested.
"""
from __future__ import annotations

import sys
from pathlib import Path

try:
    from obdb.demo import main
except ModuleNotFoundError as err:  # a checkout run with an interpreter where obdb is not installed
    if err.name != "obdb":
        raise
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))
    from obdb.demo import main

if __name__ == "__main__":
    sys.exit(main())
