"""``python -m bench``: run the benchmark (see :mod:`bench.run`)."""

from __future__ import annotations

import sys

from bench.run import cli

sys.exit(cli())
