#!/usr/bin/env python3
"""Score a saved model: ``python3 code/test_model.py -m train/demo/resnet18/model.pt -f settings/demo.json``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from a checkout without installing

from obdb.cli.environment import require_environment

require_environment("code/test_model.py")

from obdb.cli.test_model import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
