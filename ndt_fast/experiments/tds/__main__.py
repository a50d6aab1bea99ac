"""``python -m ndt_fast.experiments.tds``: the same command as ``ndt-fast reproduce tds``."""

import sys

from ndt_fast.experiments.tds.cli import main

sys.exit(main())
