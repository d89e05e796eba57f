"""The study core: what every autolora job shares, knowing nothing of LoRA training or fusion.

* ``job``: the ``Job`` interface a job implements (plan, load, studies, prepare, objective, summary, show, export);
* ``study``: ``StudySpec``, samplers and pruners, opening a study with its fingerprint;
* ``checks``: storage URLs and stored fingerprints, checked before anything is created;
* ``storage`` and ``locks``: Optuna RDB storage with heartbeats, retries, exact budgets, pop-only workers;
* ``run``: running a job's studies here, in local workers, or queued for ``autolora worker``;
* ``launch`` and ``worker``: local worker processes and ``autolora worker``;
* ``tracking``: MLflow parent and trial runs;
* ``rundir``: the run folder (kept trials);
* ``reading``: finding studies and trials for ``show`` and ``export``.
"""
