"""The trial table: every configuration of a design trained once per style, with every judge metric and the pixel
truth at every rung, on the search seeds and on the confirmation seeds, and the samples themselves.

Questions about the world, the search space, the judge and the search become queries of the table instead of
hours of training (as NAS-Bench-201, LCBench, HPOBench and YAHPO Gym do for other fields):

    python -m benchmarks.table build --styles dotted,navy --out bench-table      # resumable, appends per trial
    python -m benchmarks.table pack bench-table docs/table                       # compressed, for the repository
    python -m benchmarks.table figures docs/table                                # what the table shows

``design`` draws the configurations (a Latin hypercube over a search space, plus the presets as ``tune`` runs
them), ``build`` trains them, ``store`` writes and reads a table (``load_table``), ``figures`` prints the
figures of docs/table.md from a table alone.
"""

from benchmarks.table.store import StyleTable, load_table

__all__ = ["StyleTable", "load_table"]
