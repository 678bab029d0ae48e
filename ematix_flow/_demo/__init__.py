"""``flow demo``: a realistic source, example pipelines and two runs, on an embedded
PostgreSQL.

- :mod:`.data` creates the demo databases and generates (then changes) the source data
  in SQL (``generate_series``), so tens of thousands of rows take well under a second.
- ``example_pipelines.py`` is the pipelines module the demo copies next to its data
  directory and imports like a user's own module; it is never imported from here.
- :mod:`.orchestrate` runs the story through the public API (``ematix_flow.pipeline``)
  and the CLI's own helpers; ``ematix_flow._cli.demo`` renders it.
"""
