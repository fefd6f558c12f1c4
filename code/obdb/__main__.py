"""``python -m obdb``: the ``obdb`` command."""
import sys

from obdb.cli.environment import require_environment

require_environment("python -m obdb")

from obdb.cli.main import main  # noqa: E402

sys.exit(main())
