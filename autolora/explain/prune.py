"""A smaller LoRA from a map: the groups that carry the style, each layer at the rank its delta uses, checked by
sampling before it is written.

Choice: groups in order of their style share; a group is dropped when it carries under ``min_share`` of the style,
or when it costs the subject more than twice its share of the style (its share of the groups' content costs,
``StyleMap.cost_shares``). Then the check: the kept groups are sampled together; while they keep less than
``keep_style`` of the full LoRA's style (over the base model), the dropped group with the most style is added back.
The kept groups are folded into one exact LoRA (``autolora.loras.folded``), each layer truncated by SVD to the
directions holding ``energy`` of its delta (``rank: auto``), written, and *the written file* is loaded and sampled:
it passes when it keeps ``keep_style`` of the style, costs the subject (every content reading) at most
``CONTENT_POINTS`` more than the full LoRA does or than the base model, and breaks none of the recipe's content
floors that the full LoRA meets. A file that fails at ``rank: auto`` is
tried at full rank; one that still fails is not written, and the reason is printed.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolora.atomic import replace_folder, staging_folder
from autolora.errors import UserError
from autolora.explain.config import ExplainSection
from autolora.explain.groups import constant, subset
from autolora.explain.measure import NAME, ExplainSession
from autolora.explain.reading import Reading, StyleMap
from autolora.formats.export import export_adapter
from autolora.loras.engine import load_loras, unload
from autolora.loras.folded import fused_adapter
from autolora.loras.rank import reduce_rank_to_energy

if TYPE_CHECKING:
    from autolora.scoring.objective import Objective

CONTENT_POINTS = 2.0
"""The pruned LoRA may cost the subject this many points more than the base model or the full LoRA (whichever costs
more): two seeds' noise on the judge's content readings is of that order."""
CHECKED = "checked"


@dataclass
class Pruned:
    """What ``prune`` kept, what its written file measured, and whether it was written."""

    kept: list[str]
    dropped: list[str]
    written: bool = False
    reason: str = ""
    rank: str = "auto"
    ranks: dict[str, int] = field(default_factory=dict)
    rank_error: float = 0.0
    style_kept: float = 0.0
    """The written file's style over the base model, as a share of the full LoRA's."""
    content_cost: dict[str, float] = field(default_factory=dict)
    """Per content reading, the written file's cost to the subject against the base model, in points."""
    files: dict[str, str] = field(default_factory=dict)
    size: int = 0
    original_size: int = 0
    subsets: list[dict[str, Any]] = field(default_factory=list)
    """Every subset sampled on the way: its groups and the style it kept."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def choose(found: StyleMap, min_share: float) -> tuple[list[str], list[str]]:
    """(kept, dropped) groups, each in order of style share (most first); at least one kept."""
    shares, costs = found.shares(), found.cost_shares()
    order = sorted(found.keys, key=lambda k: -shares[k])
    kept = [k for k in order if shares[k] >= min_share and costs[k] <= 2 * shares[k]]
    kept = kept or order[:1]
    return kept, [k for k in order if k not in kept]


def style_kept(found: StyleMap, reading: Reading) -> float:
    """``reading``'s style over the base model as a share of the full LoRA's."""
    full = found.style_full()
    base = found.base.mean(found.style_metric)
    return (reading.mean(found.style_metric) - base) / full if full > 0 else 0.0


def prune(
    session: ExplainSession,
    found: StyleMap,
    settings: ExplainSection,
    out: Path,
    echo: Callable[[str], None] = print,
) -> Pruned:
    """Choose, check and write the smaller LoRA into ``out`` (replaced whole; left alone when nothing passes)."""
    original = session.plan.lora
    result = Pruned(*choose(found, settings.min_share), rank=settings.rank, original_size=original.stat().st_size)
    if found.style_full() <= 0:
        result.reason = f"the LoRA shows no style by {found.style_metric} ({found.style_full():+.3f}): nothing to keep"
        return result
    keys = found.keys
    while True:
        reading = session.reading(f"subset:{'+'.join(result.kept)}", subset(keys, result.kept))
        kept_share = style_kept(found, reading)
        result.subsets.append({"groups": list(result.kept), "style_kept": kept_share})
        echo(f"  groups {' '.join(result.kept)}: {kept_share:.0%} of the style")
        if kept_share >= settings.keep_style or not result.dropped:
            break
        result.kept.append(result.dropped.pop(0))
    ranks = [settings.rank] if settings.rank == "full" else ["auto", "full"]
    for rank in ranks:
        try:
            verdict = _write_and_check(session, found, settings, result, rank, out, echo)
        except UserError as e:  # DoRA, bias-carrying LoRAs: not a sum of low-rank products
            result.reason = str(e)
            return result
        if verdict is None:
            result.written = True
            result.reason = ""
            return result
        result.reason = verdict
        echo(f"  rank {rank}: {verdict}")
    return result


def _write_and_check(
    session: ExplainSession,
    found: StyleMap,
    settings: ExplainSection,
    result: Pruned,
    rank: str,
    out: Path,
    echo: Callable[[str], None],
) -> str | None:
    """Fold, truncate, write into a staging folder, load the written file and sample it; move it onto ``out`` and
    return None when it passes, else return why not (the staging folder removed)."""
    adapter = fused_adapter(session.fa, {NAME: subset(session.keys(found.granularity), result.kept)})
    result.rank, result.ranks, result.rank_error = rank, {}, 0.0
    if rank == "auto":
        adapter, result.rank_error, result.ranks = reduce_rank_to_energy(adapter, settings.energy)
    name = f"{session.plan.lora.stem}-pruned"
    staging = staging_folder(out)
    try:
        # the one entry point: no kohya file where the format has none (SD3) or for DoRA, the skip said in a line
        files = export_adapter(adapter, staging, name, echo=lambda line: echo(f"  {line}"))
        checked = files.get("kohya", files["diffusers"])
        reading = _sample_file(session, checked)
        result.style_kept = style_kept(found, reading)
        result.content_cost = {m: 100 * (found.base.mean(m) - reading.mean(m)) for m in found.content_metrics}
        result.size = checked.stat().st_size
        shown = ", ".join(f"{m} {c:+.1f} points" for m, c in result.content_cost.items())
        echo(f"  written file at rank {rank}: {result.style_kept:.0%} of the style, content cost {shown}")
        verdict = _verdict(found, settings, result, session.plan.objective, reading)
        if verdict is None:
            with replace_folder(out) as folder:
                for path in staging.iterdir():
                    shutil.move(str(path), folder / path.name)
            result.files = {kind: str(out / path.name) for kind, path in files.items()}
        return verdict
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _sample_file(session: ExplainSession, path: Path) -> Reading:
    """Load ``path`` beside the explained LoRA (which it replaces as the active adapter), sample, read, unload."""
    pipe = session.pipe
    with warnings.catch_warnings():  # peft warns that a second adapter joins the first: that is the point here
        warnings.simplefilter("ignore", UserWarning)
        checked = load_loras(pipe, [path], [CHECKED])
    try:
        checked.set_coefficients({CHECKED: constant(checked.lora_group_keys(CHECKED, "block"), 1.0)})
        session.samples["pruned"] = session.sample_active()
        return session.read(session.samples["pruned"])
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            unload(checked)
        pipe.set_adapters([NAME])  # the explained LoRA active again (its scales are set before every draw)


def _verdict(
    found: StyleMap, settings: ExplainSection, result: Pruned, objective: Objective, reading: Reading
) -> str | None:
    if result.style_kept < settings.keep_style:
        return f"keeps {result.style_kept:.0%} of the style (under explain.keep_style {settings.keep_style:.0%})"
    for metric, cost in result.content_cost.items():
        allowed = max(CONTENT_POINTS, found.full_cost(metric) + CONTENT_POINTS)
        if cost > allowed:
            return (
                f"costs {metric} {cost:.1f} points against the base model (the full LoRA "
                f"{found.full_cost(metric):.1f}; allowed {allowed:.1f})"
            )
    broken = objective.broken(_means(reading))
    if broken and not objective.broken(_means(found.full)):
        return f"breaks the recipe's floors the full LoRA meets ({'; '.join(broken)})"
    return None


def _means(reading: Reading) -> dict[str, float]:
    return {m: reading.mean(m) for m in reading.per_seed}
