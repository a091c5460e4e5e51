"""Batch segmentation of whole archives (``organseg batch``): Ray Data at the edges, pure cores inside.

* :mod:`~organseg.batch.discover` finds the series under an input (headers only, on the driver);
* :mod:`~organseg.batch.work` reads, segments and writes one series (the same readers, limits and
  ensemble code as ``predict --local`` and serving), never raising for bad data;
* :mod:`~organseg.batch.records` keeps the per-series done records that make a re-run resume;
* :mod:`~organseg.batch.rows` is the results table (one row per series, Parquet and CSV);
* :mod:`~organseg.batch.pipeline` is the thin Ray Data glue (CPU read tasks, a predicting actor
  pool, CPU write tasks).
"""
