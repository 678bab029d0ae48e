"""ematix-flow's benchmark: ``python -m bench`` (see :mod:`bench.run`)."""
