"""The files users load, one module per format: ``diffusers`` (``pipe.load_lora_weights``), ``kohya`` (A1111, Forge,
ComfyUI; ``kohya_flux`` for Flux's BFL names), ``lycoris`` (LoHa/LoKr), ``peft`` (peft's own folders), ``embedding``
(textual inversion), ``extract`` (DreamBooth's denoiser and its SVD-extracted LoRA). ``export.export_all`` is the
one entry point both jobs write through; ``kept`` is what every format reads of a kept adapter."""
