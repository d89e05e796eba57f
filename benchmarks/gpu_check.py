"""The GPU check: autolora's CUDA paths on full-size model shapes, in one command, no downloads.

    python benchmarks/gpu_check.py [--out gpu_check.json] [--models sd15,sdxl,flux] [--steps 20] [--tiny]
        [--methods lora,loha,lokr,textual_inversion,pivotal,dreambooth | none]

Models are built from config with random weights on the GPU: Stable Diffusion 1.5 (UNet 860 M, CLIP-L), SDXL
(UNet 2.6 B, CLIP-L + bigG) and a Flux.1-shaped transformer (Flux.1's widths, 3072 hidden, 24 heads, with 4
double and 8 single blocks instead of 19 and 38, and a 4-layer T5 of T5-XXL's width, so it fits the time box).
For each, at the model's resolution (512, 1024, 1024 px), batch 1, a rank-16 LoRA on the attention projections:

- ``autolora``: steps per second of ``autolora.tune.train.train_lora`` (bf16 base, autocast), after warm-up;
- ``bare``: the same model, LoRA, batch and dtype in a bare diffusers + peft loop (the training scripts' inner
  loop: noise, timesteps, forward, MSE, backward, clip, AdamW), and the ratio autolora / bare (aim >= 0.95);
- peak GPU memory of autolora's run, sampling throughput (20 steps, batch 4) through the pipeline;
- pass/fail of bf16 autocast, fp16 with the grad scaler and gradient checkpointing (a few steps each: finite
  loss, LoRA weights moved);
- on SD 1.5 (``--methods``): each adapter method of ``autolora.methods`` (LoRA, LoHa, LoKr rank 16 on the
  attention; textual inversion 4 vectors; pivotal; DreamBooth on the attention modules) trained by ``train_lora``
  as a trial trains it: seconds per step, peak GPU memory and trainable parameters (the "peak memory" column of
  the methods benchmark, which the CPU cannot measure).

Writes a JSON and prints a table. Sized for 8 minutes on one H200. ``--tiny`` runs the same code on the tiny
built-in models on the CPU (a smoke test of the script; the CUDA-only checks read "skipped").
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SD15_UNET = dict(
    sample_size=64,
    block_out_channels=(320, 640, 1280, 1280),
    cross_attention_dim=768,
    attention_head_dim=8,
    layers_per_block=2,
)
SDXL_UNET = dict(
    sample_size=128,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
    layers_per_block=2,
)
SD_VAE = dict(
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    latent_channels=4,
    layers_per_block=2,
)
FLUX_VAE = dict(SD_VAE, latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
                use_post_quant_conv=False)  # fmt: skip
FLUX = dict(
    patch_size=1,
    in_channels=64,
    num_layers=4,
    num_single_layers=8,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, projection_dim=768)
CLIP_G = dict(
    hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20, projection_dim=1280
)
T5_SMALL_XXL = dict(d_model=4096, d_ff=10240, d_kv=64, num_layers=4, num_heads=64, feed_forward_proj="gated-gelu")
RESOLUTION = {"sd15": 512, "sdxl": 1024, "flux": 1024}
TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def _tokenizers(tmp: Path) -> tuple[Any, Any]:
    from transformers import CLIPTokenizer, T5Tokenizer

    from autolora.models.tokenizer import write_clip_tokenizer_files, write_t5_tokenizer_files

    write_clip_tokenizer_files(tmp / "clip")
    write_t5_tokenizer_files(tmp / "t5")
    return CLIPTokenizer.from_pretrained(tmp / "clip"), T5Tokenizer.from_pretrained(tmp / "t5")


def build(name: str, device: str, dtype: Any, tmp: Path) -> Any:
    """A full-size pipeline of ``name`` with random weights, built on ``device``."""
    import diffusers
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    clip_tok, t5_tok = _tokenizers(tmp)
    torch.manual_seed(0)
    with torch.device(device):
        if name == "sd15":
            pipe = diffusers.StableDiffusionPipeline(
                vae=diffusers.AutoencoderKL(**SD_VAE),
                text_encoder=CLIPTextModel(CLIPTextConfig(**CLIP_L)),
                tokenizer=clip_tok,
                unet=diffusers.UNet2DConditionModel(**SD15_UNET),
                scheduler=diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
        elif name == "sdxl":
            pipe = diffusers.StableDiffusionXLPipeline(
                vae=diffusers.AutoencoderKL(**SD_VAE),
                text_encoder=CLIPTextModel(CLIPTextConfig(**CLIP_L)),
                text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_G)),
                tokenizer=clip_tok,
                tokenizer_2=clip_tok,
                unet=diffusers.UNet2DConditionModel(**SDXL_UNET),
                scheduler=diffusers.EulerDiscreteScheduler(
                    beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012
                ),
            )
        else:
            pipe = diffusers.FluxPipeline(
                scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True),
                vae=diffusers.AutoencoderKL(**FLUX_VAE),
                text_encoder=CLIPTextModel(CLIPTextConfig(**CLIP_L)),
                tokenizer=clip_tok,
                text_encoder_2=T5EncoderModel(T5Config(vocab_size=32128, **T5_SMALL_XXL)),
                tokenizer_2=t5_tok,
                transformer=diffusers.FluxTransformer2DModel(**FLUX),
            )
    return _frozen(pipe, device, dtype)


def build_tiny(name: str, device: str, dtype: Any) -> Any:
    from autolora.models.loading import load_pipeline, resolve_model

    source = {"sd15": "builtin:tiny-sd", "sdxl": "builtin:tiny-sdxl", "flux": "builtin:tiny-flux"}[name]
    return load_pipeline(resolve_model(source), device, dtype)


def _frozen(pipe: Any, device: str, dtype: Any) -> Any:
    pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    for comp in ("unet", "transformer", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, comp, None)
        if module is not None:
            module.requires_grad_(False).eval()
    return pipe


def train_data(pipe: Any, resolution: int, n: int = 8) -> Any:
    """Random latents and caption embeddings of the model's shapes (what autolora caches once per study)."""
    import torch

    from autolora.buckets import square
    from autolora.models.family import encode_prompts
    from autolora.tune.train import TrainData

    factor = pipe.vae_scale_factor
    channels = pipe.vae.config.latent_channels
    gen = torch.Generator().manual_seed(0)
    mean = torch.randn((n, channels, resolution // factor, resolution // factor), generator=gen)
    with torch.no_grad():
        cond = encode_prompts(pipe, [f"a picture number {i}, in sks style" for i in range(n)], str(pipe.device))
    pooled = cond.get("pooled")
    return TrainData(
        [mean],
        [torch.zeros_like(mean)],
        cond["prompt_embeds"].float().cpu(),
        pooled.float().cpu() if pooled is not None else None,
        ["x"] * n,
        resolution,
        [list(range(n))],
        [square(resolution)],
    )


def lora_spec(pipe: Any, steps: int, flux: bool) -> Any:
    from autolora.models.family import denoiser
    from autolora.models.layers import lora_candidates
    from autolora.tune.search import parse_search_space

    params: dict[str, Any] = {"rank": 16, "steps": steps, "batch_size": 1, "learning_rate": 1e-4}
    if flux:
        params.update(target_blocks=["double", "single"], target_layers=["attn", "context_attn"])
    else:
        params.update(target_layers=["self_attn", "cross_attn"])
    space = parse_search_space({"params": params}, "gpu", "gpu_check")
    arch = "flux" if flux else "sd1"
    return space.compile(lora_candidates(denoiser(pipe)), arch).spec({})


def autolora_rate(pipe: Any, data: Any, steps: int, settings: Any, device: str) -> dict[str, float]:
    """Steps per second of ``train_lora`` after a warm-up of a quarter of the steps, and its peak memory."""
    import torch

    from autolora.adapter import attach, detach
    from autolora.models.family import denoiser, denoiser_name
    from autolora.tune.train import train_lora

    spec = lora_spec(pipe, steps, denoiser_name(pipe) == "transformer")
    model = denoiser(pipe)
    attach(model, spec.unet_config(), "check")
    stamps: list[float] = []
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    _reset_peak(device)
    try:
        losses = train_lora(pipe, spec, data, settings, device, on_step=lambda s, v: stamps.append(time.perf_counter()))
        moved = any(not torch.equal(p.detach(), before[n]) for n, p in model.named_parameters() if n in before)
    finally:
        detach(model, "check")
    warm = max(1, steps // 4)
    rate = (len(stamps) - warm) / (stamps[-1] - stamps[warm - 1]) if len(stamps) > warm else float("nan")
    return {
        "steps_per_s": rate,
        "peak_gb": _peak_gb(device),
        "finite": float(all(math.isfinite(v) for v in losses)),
        "moved": float(moved),
    }


_ATTENTION = {"target_layers": ["self_attn", "cross_attn"]}
_LOW_RANK = {"rank": 16, "learning_rate": 1e-4, **_ATTENTION}
METHOD_PARAMS: dict[str, dict[str, Any]] = {
    "lora": {"method": "lora", **_LOW_RANK},
    "loha": {"method": "loha", **_LOW_RANK},
    "lokr": {"method": "lokr", **_LOW_RANK},
    "textual_inversion": {"method": "textual_inversion", "ti_vectors": 4},
    "pivotal": {"method": "pivotal", **_LOW_RANK, "ti_vectors": 4},
    "dreambooth": {"method": "dreambooth", "learning_rate": 1e-5, **_ATTENTION},
}


def method_rate(pipe: Any, data: Any, method: str, steps: int, settings: Any, device: str) -> dict[str, Any]:
    """One adapter method trained as a trial trains it (attach, ``train_lora`` with the method's parameter groups
    and prompt, detach): seconds per step after a warm-up, peak memory, trainable parameters."""
    from autolora.models.layers import lora_candidates
    from autolora.tune.search import parse_search_space
    from autolora.tune.train import train_lora

    params = {**METHOD_PARAMS[method], "steps": steps, "batch_size": 1}
    spec = parse_search_space({"params": params}, "gpu", "gpu_check").compile(lora_candidates(pipe.unet), "sd1")
    spec = spec.spec({})
    impl = spec.method
    attached: list[str] = []
    stamps: list[float] = []
    _reset_peak(device)
    try:
        impl.attach(pipe, spec, "check", attached)
        count = impl.trainable_count(pipe, spec, attached)
        prompt = (lambda c: impl.prompt(c, "in sks style")) if impl.learns_tokens else None
        losses = train_lora(pipe, spec, data, settings, device, attached=attached, prompt=prompt,
                            on_step=lambda s, v: stamps.append(time.perf_counter()))  # fmt: skip
    finally:
        impl.detach(pipe, "check", attached)
    warm = max(1, steps // 4)
    per_step = (stamps[-1] - stamps[warm - 1]) / (len(stamps) - warm) if len(stamps) > warm else float("nan")
    return {
        "s_per_step": per_step,
        "peak_gb": _peak_gb(device),
        "trainable_params": count,
        "finite": all(math.isfinite(v) for v in losses),
    }


def bare_rate(pipe: Any, data: Any, steps: int, device: str, dtype: Any) -> float:
    """Steps per second of a bare diffusers + peft loop on the same model, LoRA, batch and dtype."""
    import torch
    from peft import LoraConfig, inject_adapter_in_model

    from autolora.adapter import detach
    from autolora.models.family import denoiser, denoiser_name

    model = denoiser(pipe)
    flux = denoiser_name(pipe) == "transformer"
    spec = lora_spec(pipe, steps, flux)
    inject_adapter_in_model(LoraConfig(r=16, lora_alpha=16, target_modules=spec.modules), model, adapter_name="bare")
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    opt = torch.optim.AdamW(params, lr=1e-4)
    sched = type(pipe.scheduler).from_config(pipe.scheduler.config)
    lat = (data.latent_mean[0][:1] * pipe.vae.config.scaling_factor).to(device)
    emb = data.prompt_embeds[:1].to(device, dtype)
    pooled = data.pooled[:1].to(device, dtype) if data.pooled is not None else None
    stamps = []
    try:
        for _ in range(steps):
            noise = torch.randn_like(lat)
            with torch.autocast(device.split(":")[0], dtype=dtype, enabled=device.startswith("cuda")):
                if flux:
                    sigma = torch.rand(1, device=device)
                    noisy = (1 - sigma) * lat + sigma * noise
                    b, c, h, w = noisy.shape
                    packed = pipe._pack_latents(noisy, b, c, h, w)
                    ids = pipe._prepare_latent_image_ids(b, h // 2, w // 2, device, dtype)
                    txt_ids = torch.zeros(emb.shape[1], 3, device=device, dtype=dtype)
                    out = model(hidden_states=packed.to(dtype), timestep=sigma.to(dtype),
                                guidance=torch.ones(1, device=device), pooled_projections=pooled,
                                encoder_hidden_states=emb, txt_ids=txt_ids, img_ids=ids,
                                return_dict=False)[0]  # fmt: skip
                    pred = pipe._unpack_latents(out, h * pipe.vae_scale_factor, w * pipe.vae_scale_factor,
                                                pipe.vae_scale_factor)  # fmt: skip
                    target = noise - lat
                else:
                    t = torch.randint(0, 1000, (1,), device=device)
                    noisy = sched.add_noise(lat, noise, t)
                    kwargs: dict[str, Any] = {}
                    if pooled is not None:
                        r = data.resolution
                        ids = torch.tensor([[r, r, 0, 0, r, r]], device=device, dtype=dtype)
                        kwargs["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": ids}
                    pred = model(noisy.to(dtype), t, encoder_hidden_states=emb, **kwargs).sample
                    target = noise
            loss = torch.nn.functional.mse_loss(pred.float(), target.float())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss.detach().item()  # the scripts log every step's loss
            stamps.append(time.perf_counter())
    finally:
        detach(model, "bare")
    warm = max(1, steps // 4)
    return (len(stamps) - warm) / (stamps[-1] - stamps[warm - 1]) if len(stamps) > warm else float("nan")


def sampling_rate(pipe: Any, resolution: int, steps: int = 20, batch: int = 4) -> float:
    """Images per second through the pipeline (second call timed; the first warms up)."""
    from autolora.sampling import sample

    prompts = [f"a picture number {i}" for i in range(batch)]
    sample(pipe, prompts, [0], steps=2, guidance_scale=3.5, resolution=resolution, batch_size=batch)
    _sync(str(pipe.device))
    t0 = time.perf_counter()
    sample(pipe, prompts, [0], steps=steps, guidance_scale=3.5, resolution=resolution, batch_size=batch)
    _sync(str(pipe.device))
    return batch / (time.perf_counter() - t0)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def _peak_gb(device: str) -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")


def check(run: Callable[[], dict[str, float]]) -> str:
    try:
        r = run()
    except Exception as e:  # a failing CUDA path is the finding, not a crash of the check
        return f"fail ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"
    return "pass" if r["finite"] and r["moved"] else f"fail (finite={r['finite']:.0f} moved={r['moved']:.0f})"


def measure(name: str, device: str, steps: int, tiny: bool, tmp: Path, methods: list[str]) -> dict[str, Any]:
    import torch

    from autolora.tune.train import TrainSettings

    cuda = device.startswith("cuda")
    bf16 = torch.bfloat16 if cuda else torch.float32
    t0 = time.perf_counter()
    pipe = build_tiny(name, device, bf16) if tiny else build(name, device, bf16, tmp)
    resolution = 32 if tiny else RESOLUTION[name]
    data = train_data(pipe, resolution)
    built = time.perf_counter() - t0
    settings = TrainSettings(autocast_dtype=bf16 if cuda else None)
    ours = autolora_rate(pipe, data, steps, settings, device)
    bare = bare_rate(pipe, data, steps, device, bf16)
    out: dict[str, Any] = {
        "resolution": resolution,
        "build_s": built,
        "autolora_steps_per_s": ours["steps_per_s"],
        "bare_steps_per_s": bare,
        "ratio": ours["steps_per_s"] / bare,
        "peak_gb": ours["peak_gb"],
        "images_per_s": sampling_rate(pipe, resolution),
        "bf16": "pass" if ours["finite"] and ours["moved"] else "fail",
    }
    if name == "sd15" and methods:
        out["methods"] = {}
        for method in methods:
            try:
                out["methods"][method] = method_rate(pipe, data, method, steps, settings, device)
            except Exception as e:  # a method failing on CUDA is a finding, not a crash of the check
                out["methods"][method] = {
                    "error": f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
                }
    short = max(4, steps // 4)
    if cuda:
        checkpointed = TrainSettings(autocast_dtype=bf16, gradient_checkpointing=True)
        out["grad_checkpointing"] = check(lambda: autolora_rate(pipe, data, short, checkpointed, device))
        del pipe
        torch.cuda.empty_cache()
        half = build_tiny(name, device, torch.float16) if tiny else build(name, device, torch.float16, tmp)
        data16 = train_data(half, resolution)
        out["fp16_grad_scaler"] = check(
            lambda: autolora_rate(half, data16, short, TrainSettings(autocast_dtype=torch.float16), device)
        )
        del half
        torch.cuda.empty_cache()
    else:
        out["grad_checkpointing"] = check(
            lambda: autolora_rate(pipe, data, short, TrainSettings(gradient_checkpointing=True), device)
        )
        out["fp16_grad_scaler"] = "skipped (no CUDA)"
        out["bf16"] = "skipped (no CUDA; fp32 ran)"
    out["total_s"] = time.perf_counter() - t0
    return out


def main() -> None:
    import tempfile

    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--models", default="sd15,sdxl,flux")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--tiny", action="store_true", help="the tiny built-in models on the CPU (smoke test)")
    parser.add_argument("--methods", default=",".join(METHOD_PARAMS), help="adapter methods on SD 1.5, or none")
    args = parser.parse_args()
    methods = [] if args.methods == "none" else args.methods.split(",")
    unknown = [m for m in methods if m not in METHOD_PARAMS]
    if unknown:
        raise SystemExit(
            f"gpu_check: --methods: unknown {', '.join(unknown)}; expected some of {', '.join(METHOD_PARAMS)}"
        )
    device = "cpu" if args.tiny else "cuda"
    if not args.tiny and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device (use --tiny for the CPU smoke test)")
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "steps": args.steps,
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            print(f"{name}: building and measuring...", flush=True)
            report["models"][name] = measure(name, device, args.steps, args.tiny, Path(tmp), methods)
            args.out.write_text(json.dumps(report, indent=2))  # what finished survives a later failure
    print(f"\n{'model':6s} {'autolora it/s':>13s} {'bare it/s':>10s} {'ratio':>6s} {'peak GB':>8s} {'img/s':>6s}  "
          "bf16 / fp16+scaler / checkpointing")  # fmt: skip
    for name, r in report["models"].items():
        print(f"{name:6s} {r['autolora_steps_per_s']:13.2f} {r['bare_steps_per_s']:10.2f} {r['ratio']:6.2f} "
              f"{r['peak_gb']:8.1f} {r['images_per_s']:6.2f}  {r['bf16']} / {r['fp16_grad_scaler']} / "
              f"{r['grad_checkpointing']}")  # fmt: skip
    for name, r in report["models"].items():
        if r.get("methods"):
            print(f"\n{name} methods: {'method':18s} {'s/step':>7s} {'peak GB':>8s} {'trainable':>12s}")
            for method, m in r["methods"].items():
                if "error" in m:
                    print(f"{'':13s} {method:18s} {m['error']}")
                else:
                    print(
                        f"{'':13s} {method:18s} {m['s_per_step']:7.3f} {m['peak_gb']:8.2f} {m['trainable_params']:12,d}"
                    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
