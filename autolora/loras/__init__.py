"""LoRA files on a loaded pipeline: checked (``files``), loaded as adapters whose scale is set per group of modules
(``engine``, group keys in ``groups``), folded back into one exact adapter (``folded``), reduced in rank (``rank``).

The machinery ``fuse`` blends several LoRAs with and ``explain`` maps one LoRA with; neither job owns it.
"""
