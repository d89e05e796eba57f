"""The ``tune`` job: an Optuna study over adapter settings on the study core.

``plan`` (validated inputs) -> ``session`` (pipeline, judge and caches loaded once) -> ``trial`` (attach ->
``train`` -> sample -> score -> keep -> detach) with ``search`` (search spaces -> LoRA specs); ``job`` ties
them to the core, ``export`` writes a kept adapter, ``cli`` is the subcommand.
"""
