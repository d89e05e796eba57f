"""Attach, train, detach: base weights bit-identical; training deterministic; bad losses fail the trial."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import torch

from autolora.adapter import adapter_state_dict, attach, detach
from autolora.data import builtin_style_folder, load_style_set
from autolora.errors import TrialFailed
from autolora.models.layers import lora_candidates
from autolora.tune.search import parse_search_space
from autolora.tune.train import TrainData, TrainSettings, train_lora


def weights_hash(*modules: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for m in modules:
        for k, v in sorted(m.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def make_spec(pipe: Any, **params: Any) -> Any:
    base = {"rank": 4, "steps": 6, "learning_rate": 1e-3, "init": "gaussian"}
    base.update(params)
    compiled = parse_search_space({"params": base}, "t", "t.yaml").compile(lora_candidates(pipe.unet), "sd1")
    return compiled.spec({})


@pytest.fixture(scope="module")
def data(tiny_sd: Any) -> TrainData:
    style = load_style_set(builtin_style_folder())
    return TrainData.build(tiny_sd, style, "in sks style", 32, "cpu")


def run(pipe: Any, spec: Any, data: TrainData, **kw: Any) -> tuple[list[float], dict[str, torch.Tensor]]:
    attach(pipe.unet, spec.unet_config(), "t")
    te = spec.text_encoder_config()
    if te is not None:
        attach(pipe.text_encoder, te, "t")
    try:
        torch.manual_seed(123)  # peft's init draws from the global generator
        for p in pipe.unet.parameters():
            if p.requires_grad:
                torch.nn.init.normal_(p, std=0.02)
        losses = train_lora(pipe, spec, data, TrainSettings(seed=0, **kw), "cpu")
        return losses, adapter_state_dict(pipe.unet, "t")
    finally:
        detach(pipe.unet, "t")
        if te is not None:
            detach(pipe.text_encoder, "t")


def test_base_weights_bit_identical_after_a_trial(tiny_sd: Any, data: TrainData) -> None:
    before = weights_hash(tiny_sd.unet, tiny_sd.text_encoder)
    modules_before = [type(m) for m in tiny_sd.unet.modules()]
    spec = make_spec(tiny_sd, text_encoder=True, use_rslora=True, target_layers=["self_attn", "cross_attn", "conv"])
    losses, sd = run(tiny_sd, spec, data)
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses)))
    assert any("lora_A" in k for k in sd)
    assert weights_hash(tiny_sd.unet, tiny_sd.text_encoder) == before
    assert [type(m) for m in tiny_sd.unet.modules()] == modules_before  # no peft wrapper left behind


def test_dora_adapter_detaches_cleanly(tiny_sd: Any, data: TrainData) -> None:
    before = weights_hash(tiny_sd.unet)
    run(tiny_sd, make_spec(tiny_sd, use_dora=True), data)
    assert weights_hash(tiny_sd.unet) == before


def test_training_is_deterministic_on_cpu(tiny_sd: Any, data: TrainData) -> None:
    spec = make_spec(tiny_sd)
    a, sd_a = run(tiny_sd, spec, data)
    b, sd_b = run(tiny_sd, spec, data)
    assert a == b
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    c, _ = run(tiny_sd, make_spec(tiny_sd, learning_rate=5e-3), data)
    assert c != a


def test_min_snr_and_v_prediction(tiny_sd: Any, data: TrainData) -> None:
    plain, _ = run(tiny_sd, make_spec(tiny_sd), data)
    snr, _ = run(tiny_sd, make_spec(tiny_sd, min_snr_gamma=5.0), data)
    assert snr != plain
    original = tiny_sd.scheduler
    tiny_sd.scheduler = type(original).from_config(original.config, prediction_type="v_prediction")
    try:
        v, _ = run(tiny_sd, make_spec(tiny_sd), data)
    finally:
        tiny_sd.scheduler = original
    assert v != plain and all(torch.isfinite(torch.tensor(v)))


def test_nan_loss_fails_the_trial(tiny_sd: Any, data: TrainData) -> None:
    nan = [m * float("nan") for m in data.latent_mean]
    bad = TrainData(nan, data.latent_std, data.prompt_embeds, None, data.captions, 32, data.members, data.buckets)
    before = weights_hash(tiny_sd.unet)
    with pytest.raises(TrialFailed, match="loss is nan at step 1"):
        run(tiny_sd, make_spec(tiny_sd), bad)
    assert weights_hash(tiny_sd.unet) == before


def test_sdxl_trains_with_text_encoders(tiny_sdxl: Any) -> None:
    style = load_style_set(builtin_style_folder())
    data = TrainData.build(tiny_sdxl, style, "in sks style", 32, "cpu")
    assert data.pooled is not None
    before = weights_hash(tiny_sdxl.unet, tiny_sdxl.text_encoder, tiny_sdxl.text_encoder_2)
    compiled = parse_search_space(
        {"params": {"rank": 2, "steps": 3, "text_encoder": True, "init": "gaussian"}}, "t", "t"
    ).compile(lora_candidates(tiny_sdxl.unet), "sdxl")
    spec = compiled.spec({})
    attach(tiny_sdxl.unet, spec.unet_config(), "t")
    for te in (tiny_sdxl.text_encoder, tiny_sdxl.text_encoder_2):
        attach(te, spec.text_encoder_config(), "t")
    try:
        losses = train_lora(tiny_sdxl, spec, data, TrainSettings(), "cpu")
    finally:
        for m in (tiny_sdxl.unet, tiny_sdxl.text_encoder, tiny_sdxl.text_encoder_2):
            detach(m, "t")
    assert len(losses) == 3
    assert weights_hash(tiny_sdxl.unet, tiny_sdxl.text_encoder, tiny_sdxl.text_encoder_2) == before


def test_train_data_round_trip(tmp_path: Any, data: TrainData) -> None:
    data.save(tmp_path / "d.safetensors")
    back = TrainData.load(tmp_path / "d.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(back.latent_mean, data.latent_mean, strict=True))
    assert back.captions == data.captions and back.buckets == data.buckets and back.members == data.members


def test_buckets_keep_aspect_and_batches_stay_in_one_bucket(tiny_sdxl: Any, tmp_path: Any) -> None:
    """Wide, tall and square pictures go to three buckets of about the square's area; latents are cached per
    bucket at the bucket's size, every batch is drawn within one bucket, and SDXL trains on them (its size
    conditioning follows the bucket)."""
    from PIL import Image

    from autolora.buckets import Bucket, make_buckets, plan_buckets

    buckets = make_buckets(32, 4)
    assert Bucket(32, 32) in buckets
    assert all(b.width % 4 == 0 and b.height % 4 == 0 and b.width * b.height <= 32 * 32 for b in buckets)
    assert all(max(b.width, b.height) / min(b.width, b.height) <= 2.5 for b in buckets)
    sizes = [(96, 48), (48, 96), (64, 64), (90, 54)]
    used, of = plan_buckets(sizes, 32, 4, "buckets")
    # 2:1 would be 44x22, but 22 is no multiple of 4: the closest bucket of at most the square's area is 44x20
    assert [str(used[k]) for k in of] == ["44x20", "20x44", "32x32", "40x24"]
    assert plan_buckets(sizes, 32, 4, "center") == ([Bucket(32, 32)], [0, 0, 0, 0])
    folder = tmp_path / "style"
    folder.mkdir()
    for i, size in enumerate(sizes):
        Image.new("RGB", size, (200, 40 * i, 90)).save(folder / f"p{i}.png")
    style = load_style_set(folder)
    data = TrainData.build(tiny_sdxl, style, "in sks style", 32, "cpu", used, of)
    for mean, bucket in zip(data.latent_mean, data.buckets, strict=True):
        assert tuple(mean.shape[2:]) == (bucket.height // 2, bucket.width // 2)
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(30):
        latents, idx = data.draw(3, gen)
        k = of[int(idx[0])]
        assert all(of[int(i)] == k for i in idx)
        assert tuple(latents.shape[2:]) == tuple(data.latent_mean[k].shape[2:])
        seen.add(k)
    assert seen == set(range(len(used)))
    spec = make_spec(tiny_sdxl)
    attach(tiny_sdxl.unet, spec.unet_config(), "t")
    try:
        losses = train_lora(tiny_sdxl, spec, data, TrainSettings(), "cpu")
    finally:
        detach(tiny_sdxl.unet, "t")
    assert len(losses) == int(spec["steps"]) and all(torch.isfinite(torch.tensor(losses)))
