"""Diagnostics of a style set, before any trial: can the base model represent it, is it sound data, and can the
judge see it?

Four data checks, each one ``Finding`` (a line, maybe a warning, and figures for MLflow):

- ``vae``: the base VAE's round trip (encode -> decode, at the training resolution and crop) on every reference,
  beside the same round trip on the base model's own samples, the yardstick of what the model can represent.
  A LoRA learns in the VAE's latent space, so a look the VAE cannot reconstruct cannot be learnt at all.
- ``duplicates``: near-identical references (PSNR above ``DUPLICATE_DB`` between the two at 32 x 32), which
  weigh a picture twice and shrink the set.
- ``captions``: references with and without a caption (without one, a picture trains on the trigger alone).
- ``sizes``: sizes and aspect ratios, the aspect-ratio bucket each picture falls in (or the centre square under
  ``data.crop: center``), and what the crop and the resize to the training size do to them.

Then the judge's self-check as lines (``judge_findings``, kind ``judge``): each style term's AUC
(``autolora.scoring.selfcheck``), what ``style: auto`` averages, and whether the judge reads the subjects under this
style (``content_finding``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from autolora.buckets import crop_loss, square
from autolora.core.findings import Finding
from autolora.models.roundtrip import psnr, round_trip_psnr
from autolora.scoring.selfcheck import AUTO_TERMS, READABLE, auto_terms

if TYPE_CHECKING:
    from PIL import Image

    from autolora.buckets import Bucket
    from autolora.data import StyleSet
    from autolora.scoring.selfcheck import TermCheck

VAE_GAP_DB = 10.0
"""Warn when the references' median round trip is this far below the base samples' median. The base's samples
come out of its decoder, so they round-trip better than any outside picture: pictures the model does represent
sit 3-8 dB below them (miniworld's drawn styles with the shipped VAE), pictures it cannot 15-25 dB."""
VAE_FLOOR_DB = 15.0
"""Warn below this median round trip whatever the yardstick (a picture this far off has lost its look)."""
DUPLICATE_DB = 32.0
CROP_LOSS = 0.2
"""Warn when the centre crop drops more than this share of a reference's area."""
UPSCALE = 1.5
"""Warn when a reference is enlarged by more than this factor to reach the training size."""


def _median(values: Sequence[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def vae_finding(refs: Sequence[float], names: Sequence[str], yardstick: Sequence[float]) -> Finding:
    ref_med, worst = _median(refs), min(range(len(refs)), key=lambda i: refs[i])
    metrics = {"refs_psnr_median": ref_med, "refs_psnr_min": refs[worst]}
    line = f"VAE round trip {ref_med:.1f} dB median on the references (worst {refs[worst]:.1f} dB, {names[worst]})"
    gap, far = 0.0, []
    if yardstick:
        base_med = _median(yardstick)
        gap = base_med - ref_med
        metrics.update(base_psnr_median=base_med, gap_db=gap)
        line += f", {base_med:.1f} dB on the base model's own samples"
        far = [n for n, p in zip(names, refs, strict=True) if base_med - p > VAE_GAP_DB]
    metrics["refs_far"] = float(len(far))
    if gap > VAE_GAP_DB or ref_med < VAE_FLOOR_DB:
        return Finding(
            "vae",
            f"{line}: the references are far outside what the base model can represent ({len(far)} of "
            f"{len(refs)} over {VAE_GAP_DB:.0f} dB below its samples); a LoRA cannot learn what its VAE cannot "
            "reconstruct",
            warning=True,
            metrics=metrics,
        )
    return Finding("vae", line, metrics=metrics)


def duplicates_finding(images: Sequence[Image.Image], names: Sequence[str]) -> Finding:
    import numpy as np
    from PIL import Image as PILImage

    small = [
        np.asarray(im.convert("RGB").resize((32, 32), PILImage.Resampling.BOX), dtype=np.float32) / 255.0
        for im in images
    ]
    pairs = [
        (names[i], names[j])
        for i in range(len(small))
        for j in range(i + 1, len(small))
        if psnr(small[i], small[j]) >= DUPLICATE_DB
    ]
    metrics = {"pairs": float(len(pairs))}
    if not pairs:
        return Finding("duplicates", f"no near-duplicate references among {len(images)}", metrics=metrics)
    shown = ", ".join(f"{a} ~ {b}" for a, b in pairs[:3]) + (f" and {len(pairs) - 3} more" if len(pairs) > 3 else "")
    return Finding(
        "duplicates",
        f"{len(pairs)} near-duplicate reference pair{'s' if len(pairs) > 1 else ''} ({shown}): each counts twice "
        "in training; remove the copies or add different pictures",
        warning=True,
        metrics=metrics,
    )


def captions_finding(captions: Sequence[str], names: Sequence[str]) -> Finding:
    have = sum(1 for c in captions if c)
    metrics = {"captioned": float(have), "uncaptioned": float(len(captions) - have)}
    if have == len(captions):
        return Finding("captions", f"all {have} references have a caption", metrics=metrics)
    if have == 0:
        return Finding(
            "captions",
            f"none of the {len(captions)} references has a caption (name.txt): each trains on the trigger alone",
            metrics=metrics,
        )
    missing = [n for n, c in zip(names, captions, strict=True) if not c]
    shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    return Finding(
        "captions",
        f"{have} of {len(captions)} references have a caption, {len(missing)} have none ({shown}): those train on "
        "the trigger alone and teach it their content too; caption all or none",
        warning=True,
        metrics=metrics,
    )


def _over(values: Sequence[float], limit: float) -> tuple[int, int]:
    """How many ``values`` exceed ``limit``, and the index of the largest."""
    return sum(v > limit for v in values), max(range(len(values)), key=lambda i: values[i])


def _bucket_groups(names: Sequence[str], buckets: Sequence[Bucket], bucket_of: Sequence[int]) -> str:
    parts = []
    for k, bucket in enumerate(buckets):
        members = [n for n, b in zip(names, bucket_of, strict=True) if b == k]
        shown = ", ".join(members[:3]) + (f" and {len(members) - 3} more" if len(members) > 3 else "")
        parts.append(f"{bucket} ({len(members)}: {shown})")
    return "; ".join(parts)


def sizes_finding(
    images: Sequence[Image.Image],
    names: Sequence[str],
    resolution: int,
    buckets: Sequence[Bucket] = (),
    bucket_of: Sequence[int] = (),
) -> Finding:
    """Sizes, aspect ratios and what the crop does; with ``buckets``, the bucket each picture is trained at."""

    sizes = [im.size for im in images]
    if not buckets:
        buckets, bucket_of = [square(resolution)], [0] * len(sizes)
    aspects = [max(w, h) / min(w, h) for w, h in sizes]
    lost = [crop_loss(size, buckets[b]) for size, b in zip(sizes, bucket_of, strict=True)]
    upscale = [max(buckets[b].width / w, buckets[b].height / h) for (w, h), b in zip(sizes, bucket_of, strict=True)]
    metrics = {
        "min_side": float(min(min(s) for s in sizes)),
        "max_side": float(max(max(s) for s in sizes)),
        "max_aspect": max(aspects),
        "max_crop_loss": max(lost),
        "max_upscale": max(upscale),
        "buckets": float(len(buckets)),
    }
    small = min(sizes, key=lambda s: s[0] * s[1])
    big = max(sizes, key=lambda s: s[0] * s[1])
    if len(buckets) == 1 and buckets[0] == square(resolution):
        where = f"training takes the centre square at {resolution} px"
    else:
        where = f"training in {len(buckets)} aspect-ratio bucket(s) of about {resolution}x{resolution} px: " + (
            _bucket_groups(names, buckets, bucket_of)
        )
    line = f"sizes {small[0]}x{small[1]} to {big[0]}x{big[1]}, aspect up to {max(aspects):.2f}; {where}"
    problems = []
    n_cropped, worst = _over(lost, CROP_LOSS)
    if n_cropped:
        problems.append(
            f"the crop drops over {CROP_LOSS:.0%} of {n_cropped} reference(s) (up to {lost[worst]:.0%}, {names[worst]})"
        )
    n_enlarged, worst = _over(upscale, UPSCALE)
    if n_enlarged:
        problems.append(
            f"{n_enlarged} reference(s) are enlarged over {UPSCALE}x (up to {upscale[worst]:.1f}x, "
            f"{names[worst]}: blurred)"
        )
    if problems:
        return Finding("sizes", f"{line}: {'; '.join(problems)}", warning=True, metrics=metrics)
    return Finding("sizes", f"{line}: {'nothing cropped' if max(lost) < 0.005 else 'little cropped'}", metrics=metrics)


def diagnose_style_set(
    style: StyleSet,
    resolution: int,
    vae: Any = None,
    yardstick: Sequence[Image.Image] = (),
    buckets: Sequence[Bucket] = (),
    bucket_of: Sequence[int] = (),
    crop: str = "center",
) -> list[Finding]:
    """Every check on ``style`` (the VAE one when ``vae`` is given; ``yardstick``: the base model's samples)."""
    findings = []
    if vae is not None:
        refs = round_trip_psnr(vae, style.images, resolution)
        base = round_trip_psnr(vae, list(yardstick), resolution) if yardstick else []
        findings.append(vae_finding(refs, style.names, base))
    findings.append(duplicates_finding(style.images, style.names))
    findings.append(captions_finding(style.captions, style.names))
    if crop == "center":
        buckets, bucket_of = (), ()
    findings.append(sizes_finding(style.images, style.names, resolution, buckets, bucket_of))
    return findings


def content_finding(cost: dict[str, float]) -> Finding:
    """How well the judge reads the subject under this style (``ClipStyleContentScorer.style_cost``): a plain line,
    or a warning when it cannot (the content checks would be blind) or when the references have no captions."""
    if "reference_choice" not in cost:
        return Finding("content", "no captions on every reference: the content check cannot net out what the style "
                       "costs the judge's reading of a subject (caption your pictures)", kind="judge")  # fmt: skip
    read, lost = cost["reference_choice"], -cost["choice_cost"]
    metrics = {"reference_choice": read, "choice_cost": lost, "text_cost": cost["text_cost"]}
    if read < READABLE:
        return Finding("content", f"the judge cannot read the subjects of your pictures (it picks their caption "
                       f"among its alternatives {read:.0%} of the time): the content check cannot tell a changed "
                       "subject under this style; look at the samples", warning=True, metrics=metrics,
                       kind="judge")  # fmt: skip
    line = (
        f"the judge reads the subjects of your pictures at {read:.0%}; the content check nets out the {lost:.0%} "
        "the style itself costs that reading"
    )
    return Finding("content", line, metrics=metrics, kind="judge")


def judge_findings(
    checks: list[TermCheck], paired: bool, objective_terms: set[str], cost: dict[str, float] | None = None
) -> list[Finding]:
    """The self-check as setup lines: one per term, then what ``style: auto`` uses; a warning when no term passes
    (the style scores would be noise) or when the objective names a fixed term that failed; then how well the judge
    reads the subject under this style (``content_finding``)."""
    out = [
        Finding(c.term, c.line(paired), metrics={"auc": c.auc, "scale": c.scale} if not math.isnan(c.auc) else {},
                kind="judge")
        for c in checks
    ]  # fmt: skip
    passed = [c.term for c in checks if c.passed]
    outside = [t for t in passed if t not in AUTO_TERMS]
    if "style_auto" in objective_terms:  # only the terms auto may average count for an auto objective
        passed = [t for t in passed if t in AUTO_TERMS]
    if not passed:
        best = max((c for c in checks if not math.isnan(c.auc)), key=lambda c: c.auc, default=None)
        told = f" (best: {best.term} at AUC {best.auc:.2f})" if best else ""
        fix = f", but for {outside[0]}, which style: auto leaves out (style: {outside[0]} names it)" if outside else ""
        out.append(Finding("style", f"no style term tells your pictures from the base model's{told}{fix}: the style "
                           "scores would be noise; more or more consistent references, or another judge "
                           "(objective clip.model)", warning=True, kind="judge"))  # fmt: skip
    elif "style_auto" in objective_terms:
        chosen = [c.term for c in auto_terms(checks)]
        out.append(Finding("style", f"style: auto averages {', '.join(chosen)} (each over its value on held-out "
                           "references)", kind="judge"))  # fmt: skip
    for c in checks:
        if c.term in objective_terms and not c.passed and not math.isnan(c.auc):
            out.append(Finding(c.term, f"the objective's style term {c.term} cannot see this style (AUC "
                               f"{c.auc:.2f}); the style_auto objectives choose the terms that can", warning=True,
                               kind="judge"))  # fmt: skip
    if cost is not None:
        out.append(content_finding(cost))
    return out
