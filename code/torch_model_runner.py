#!/usr/bin/env python3
"""Train every variant of a settings file: ``python3 code/torch_model_runner.py -f settings/demo.json``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from a checkout without installing

from obdb.cli.environment import require_environment

require_environment("code/torch_model_runner.py")

from obdb.cli.runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
