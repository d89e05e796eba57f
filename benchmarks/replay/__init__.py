"""The search replayed on the trial table (issue 35): optuna's samplers and pruners run against the table as if
they were training (``lookup``), arm by arm (``arms``), with what each would export counted by its confirmed value
and its pixel truth (``run``, ``figures``). ``python -m benchmarks.replay --help``."""
