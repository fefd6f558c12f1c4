#!/usr/bin/env python3
"""Push model predictions and ground truth to CVAT (same as ``obdb annotate``); see ``--help``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from obdb.cli.environment import require_environment

require_environment("code/auto_annotate.py")

from obdb.cli.annotate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
