"""``python -m fieldforge``: the ``fieldforge`` console script."""

import sys

from fieldforge.apps.cli.main import main

sys.exit(main())
