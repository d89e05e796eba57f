"""An adapter as peft's own files: one ``PeftModel.save_pretrained`` folder per component.

``peft/<component>/adapter_model.safetensors`` + ``adapter_config.json``, which
``PeftModel.from_pretrained(pipe.unet, "peft/unet")`` (or ``pipe.text_encoder``...) loads for any method peft
has, LoHa and LoKr included. Written by hand rather than through ``PeftModel.save_pretrained``, which needs the
model wrapped and loaded: a kept adapter is only its state dict and config. The keys carry the
``base_model.model.`` prefix ``save_pretrained`` writes; the config is the kept one as peft saves it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from autolora.atomic import readable, replace_folder

if TYPE_CHECKING:
    from autolora.adapter import KeptAdapter

PEFT_FOLDER = "peft"
WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
PREFIX = "base_model.model."


def export_peft(adapter: KeptAdapter, folder: Path) -> None:
    """Write ``folder/<component>/{adapter_model.safetensors, adapter_config.json}``, replacing ``folder`` whole."""
    from safetensors.torch import save_file

    with replace_folder(folder) as tmp:
        for comp, state in adapter.state_dicts.items():
            if not state:
                continue
            (tmp / comp).mkdir()
            tensors = {PREFIX + k: v.detach().cpu().contiguous() for k, v in state.items()}
            save_file(tensors, str(tmp / comp / WEIGHTS), metadata={"format": "pt"})
            readable(tmp / comp / WEIGHTS)
            config = dict(adapter.configs[comp])
            config["base_model_name_or_path"] = str(adapter.base.get("source") or "")
            (tmp / comp / CONFIG).write_text(json.dumps(config, indent=2, default=str) + "\n", encoding="utf-8")
