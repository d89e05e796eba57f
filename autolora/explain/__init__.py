"""``autolora explain``: where a LoRA's style lives, group by group, what each group costs the subject, how much of
its rank it uses, and a smaller LoRA that keeps only what matters.

One concept per module: ``config`` (the ``explain`` section), ``plan`` (inputs validated before anything loads),
``spectrum`` (each layer's singular values), ``groups`` (each group's coefficients: alone, all but it), ``measure``
(the map: samples scored per group), ``prune`` (the smaller LoRA, checked by sampling before it is written),
``output`` (JSON, heatmap, page, summary lines), ``job`` and ``cli``. ``tune`` and ``fuse`` may use it; it uses
neither (the loaded-LoRA machinery is ``autolora.loras``).
"""
