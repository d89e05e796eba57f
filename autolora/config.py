"""Run configuration: dataclasses that validate themselves, loaded from YAML/TOML plus flags.

Every section is a dataclass whose fields document themselves in place. Unknown keys are errors
that suggest the closest valid key (the field's complaint about ai-toolkit's ``kwargs.get``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from autolora.errors import UserError, closest
from autolora.textfiles import read_text

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "no", "fp16", "bf16")
SWITCHES = ("auto", "on", "off")
SAMPLERS = ("auto", "tpe", "random", "cmaes", "gp", "nsga2", "qmc")
PRUNERS = ("median", "successive_halving", "hyperband", "none")


def _check(ok: bool, where: str, expected: str, value: object) -> None:
    if not ok:
        raise UserError(f"{where}: expected {expected}, got {value!r}")


@dataclass
class ModelConfig:
    """Which base model, and where and how it runs."""

    base_model: str = "builtin:miniworld"
    """Local diffusers folder, Hugging Face hub id (from the local cache), or ``builtin:NAME``."""
    allow_pickle: bool = False
    """Load ``.bin``/``.ckpt`` weights too. Pickle can run code: only for files you trust."""
    device: str = "auto"
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``."""
    mixed_precision: str = "auto"
    """Base-weight dtype and autocast on CUDA: ``auto`` (bf16 where supported, else fp16), ``no``,
    ``fp16``, ``bf16``. CPU always runs fp32."""
    gradient_checkpointing: str = "auto"
    """``auto`` (on for CUDA, off for CPU), ``on`` or ``off``."""

    def validate(self, where: str) -> None:
        _check(bool(self.base_model), f"{where}.base_model", "a model folder, hub id or builtin:NAME", self.base_model)
        dev_ok = self.device in DEVICES or (self.device.startswith("cuda:") and self.device[5:].isdigit())
        _check(dev_ok, f"{where}.device", "auto, cpu, cuda or cuda:N", self.device)
        _check(
            self.mixed_precision in PRECISIONS, f"{where}.mixed_precision", "|".join(PRECISIONS), self.mixed_precision
        )
        _check(
            self.gradient_checkpointing in SWITCHES,
            f"{where}.gradient_checkpointing",
            "|".join(SWITCHES),
            self.gradient_checkpointing,
        )


@dataclass
class DataConfig:
    """The style to learn and the prompts that evaluate it."""

    style_images: str | None = None
    """Folder of style images (png/jpg/webp/bmp); ``name.txt`` beside ``name.png`` is its caption.
    None: the built-in style set of the built-in model."""
    trigger: str = "in sks style"
    """Words that call the style; appended to every training caption and evaluation prompt."""
    identifier: str = "sks"
    """The rare word of the trigger that names the style. Textual inversion and pivotal tuning write their learnt
    tokens in its place and keep the rest of the trigger (``in <autolora> style``), as diffusers' advanced
    training scripts write ``TOK`` inside the instance prompt. Empty, or not a word of the trigger: the tokens
    replace the whole trigger."""
    prompts: str | None = None
    """Text file, one content prompt per line (``#`` starts a comment). None: built-in prompts."""
    prompt_template: str = "{prompt}, {trigger}"
    """How an evaluation prompt and the trigger combine."""
    resolution: int | None = None
    """Training and sampling size in pixels. None: the model's native size."""
    strict: bool = False
    """Stop before the first trial when a data diagnostic warns (``--strict``); otherwise warn and run."""
    crop: str = "buckets"
    """``buckets``: each picture keeps its aspect ratio in the closest of a set of equal-area training sizes
    (``autolora.buckets``); ``center``: every picture's centre square."""

    def validate(self, where: str) -> None:
        _check(bool(self.trigger.strip()), f"{where}.trigger", "a non-empty phrase", self.trigger)
        _check(
            not any(c.isspace() for c in self.identifier),
            f"{where}.identifier",
            "one word of the trigger (no spaces) or empty",
            self.identifier,
        )
        _check(self.crop in ("buckets", "center"), f"{where}.crop", "buckets or center", self.crop)
        _check(
            "{prompt}" in self.prompt_template,
            f"{where}.prompt_template",
            "a template with {prompt}",
            self.prompt_template,
        )
        if self.resolution is not None:
            _check(
                self.resolution >= 8 and self.resolution % 8 == 0,
                f"{where}.resolution",
                "a multiple of 8, at least 8",
                self.resolution,
            )


@dataclass
class TrainConfig:
    """Training settings shared by every trial (the search space may override some)."""

    batch_size: int = 1
    """Images per step (a search-space ``batch_size`` overrides it)."""
    eval_every: int = 0
    """Sample, score and report to the pruner every N steps (and at the last step); 0: half the
    fewest steps the search space allows, so every trial reports at the same steps."""
    max_grad_norm: float = 1.0
    """Gradient clipping; 0 turns it off."""
    noise_offset: float = 0.0
    """Offset noise strength (0: off)."""
    min_snr_gamma: float = 0.0
    """Min-SNR loss weighting gamma (0: off; 5 is the paper's value)."""
    seed: int = 0
    """Seed for training noise and data order; every trial uses it, so trials differ only by params."""
    prior_images: int = 8
    """Class pictures the base model draws once per study (per class prompt) for the prior-preservation loss
    (search-space ``prior_weight`` > 0; DreamBooth's uses 100-200 on real models)."""

    def validate(self, where: str) -> None:
        _check(self.batch_size >= 1, f"{where}.batch_size", "an integer >= 1", self.batch_size)
        _check(self.prior_images >= 1, f"{where}.prior_images", "an integer >= 1", self.prior_images)
        _check(self.eval_every >= 0, f"{where}.eval_every", "an integer >= 0", self.eval_every)
        _check(self.max_grad_norm >= 0, f"{where}.max_grad_norm", "a number >= 0", self.max_grad_norm)
        _check(self.noise_offset >= 0, f"{where}.noise_offset", "a number >= 0", self.noise_offset)
        _check(self.min_snr_gamma >= 0, f"{where}.min_snr_gamma", "a number >= 0", self.min_snr_gamma)


DEFAULT_GUIDANCE = {"sd1": 7.5, "sd2": 7.5, "sdxl": 7.5, "sd3": 7.0, "flux": 3.5}
"""Evaluation guidance per architecture when ``eval.guidance_scale`` is not given (SD3's and Flux.1-dev's
pipeline defaults; Flux schnell has no guidance embedding and ignores it)."""


@dataclass
class EvalConfig:
    """How samples are drawn for scoring: the same prompts x seeds for every trial."""

    seeds: list[int] = field(default_factory=lambda: [0, 1])
    """Sampling seeds; each prompt is drawn once per seed."""
    confirm_seeds: list[int] = field(default_factory=lambda: [100, 101, 102, 103, 104, 105])
    """Seeds of the confirmation stage (``study.confirm_top_k``): other seeds than ``seeds``, and more of them, so
    the exported best is the one that stays best on samples the search never saw."""
    inference_steps: int = 20
    """Denoising steps per sample."""
    guidance_scale: float | None = None
    """Guidance scale (classifier-free; Flux dev: the distilled guidance). None: the model family's usual value,
    ``DEFAULT_GUIDANCE`` (7.5 for SD 1.x/2.x/SDXL, 7.0 for SD3, 3.5 for Flux), resolved when the study is
    planned and written to the run's config.yaml."""

    def guidance(self) -> float:
        """The resolved guidance scale (``resolve_guidance`` has run)."""
        if self.guidance_scale is None:
            raise RuntimeError("eval.guidance_scale is not resolved yet (call resolve_guidance with the model's arch)")
        return float(self.guidance_scale)

    def resolve_guidance(self, arch: str) -> None:
        if self.guidance_scale is None:
            self.guidance_scale = DEFAULT_GUIDANCE.get(arch, 7.5)

    batch_size: int = 4
    """Images per sampling call (lower it when sampling runs out of memory)."""
    clip_model: str | None = None
    """Override the objective's open_clip model name (or ``builtin:NAME``)."""
    clip_pretrained: str | None = None
    """Override the objective's open_clip pretrained tag or local checkpoint file."""
    intro_style: bool = True
    """Also read each sample's style with the base model's own denoiser features (IntroStyle, the ``style_intro``
    term; ``autolora.models.features``): one VAE encode and one denoiser pass per picture, no extra weights. The
    judge's self-check decides per study whether ``style: auto`` uses it."""
    style_model: str | None = None
    """A CSD style model checkpoint (Somepalli et al. 2024, its ``checkpoint.pth``; a file you supply, read through
    open_clip): adds the ``style_csd`` term (``autolora.scoring.csd``). None: no such term."""
    style_model_arch: str = "ViT-L-14"
    """The open_clip architecture of ``style_model``: a name open_clip knows, a model config ``.json`` or
    ``builtin:NAME`` (CSD's released model is ViT-L-14)."""

    def validate(self, where: str) -> None:
        _check(len(self.seeds) > 0, f"{where}.seeds", "a non-empty list of integers", self.seeds)
        _check(
            len(self.confirm_seeds) >= 2 and len(set(self.confirm_seeds)) == len(self.confirm_seeds),
            f"{where}.confirm_seeds",
            "a list of 2 or more different integers (the noise is measured over them)",
            self.confirm_seeds,
        )
        shared = sorted(set(self.seeds) & set(self.confirm_seeds))
        _check(not shared, f"{where}.confirm_seeds", f"seeds not in eval.seeds (shared: {shared})", self.confirm_seeds)
        _check(self.inference_steps >= 1, f"{where}.inference_steps", "an integer >= 1", self.inference_steps)
        _check(
            self.style_model is None or Path(self.style_model).is_file(),
            f"{where}.style_model",
            "a CSD checkpoint file (or null)",
            self.style_model,
        )
        _check(self.batch_size >= 1, f"{where}.batch_size", "an integer >= 1", self.batch_size)
        _check(
            self.guidance_scale is None or self.guidance_scale >= 0,
            f"{where}.guidance_scale",
            "a number >= 0",
            self.guidance_scale,
        )


@dataclass
class StudyConfig:
    """The Optuna study: where it lives, what it searches, how long."""

    name: str | None = None
    """Study name. None: the style folder's name (``demo`` for the built-in style)."""
    out: str | None = None
    """Run folder: resolved config, default storage, kept adapters. None: ``runs/<name>``."""
    storage: str | None = None
    """Optuna storage URL. None: ``sqlite:///<out>/optuna.db``."""
    mlflow_uri: str | None = None
    """MLflow tracking URI. None: ``MLFLOW_TRACKING_URI``, else MLflow's default."""
    trials: int = 10
    """Trials to run in this invocation (a resumed study adds this many)."""
    timeout: float | None = None
    """Stop starting new trials after this many seconds."""
    search_space: str | None = None
    """Built-in search-space name (``search_spaces/``) or a YAML file. None: ``quick``, or ``sd3`` / ``flux`` for
    those models."""
    objective: str = "balanced"
    """Built-in objective name (``objectives/``) or a YAML file."""
    sampler: str = "auto"
    """``auto`` (random search after the presets for the first 40 trials, then TPE: chosen by the replay on the trial
    table, ``autolora.tune.plan.auto_startup`` and ``docs/replay.md``; constant liar when workers run trials side by
    side), tpe (optuna's TPE, 10 random trials first), random, cmaes, gp, nsga2
    or qmc."""
    presets: str = "auto"
    """The first trials of a new study: ``auto`` (the trainers' defaults that fit the model: diffusers-default and
    kohya-like for UNets, none for SD3/Flux), ``none``, or comma-separated preset spaces (names or files). The
    replay on the trial table (``docs/replay.md``) kept them first: +0.055 confirmed value and +0.06 usable share at
    10 trials on the wide table; a portfolio of other styles' best configurations opened worse there."""
    warm_start: str | None = None
    """A run folder or study name (in ``storage``) of an earlier study on the same base model: its best
    configurations are the new study's first trials."""
    pruner: str = "median"
    """median (a trial below the median of earlier trials at the same rung stops), successive_halving (optuna's
    asynchronous SHA: a third of the trials go on at each rung), hyperband or none. Multi-objective studies never
    prune. Pruners compare trials at equal steps: a low learning rate starts slower and may be cut early. The
    replay on the trial table (``docs/replay.md``) kept median: successive halving lost 0.05-0.09 of confirmed
    value, Hyperband matched it with 10-20 % more steps, no pruner bought +0.03 with 1.8-2.5x the steps."""
    pruner_startup_trials: int = 2
    """Median pruner: complete trials before any pruning."""
    explain: bool = True
    """At the end of ``tune``, map where the exported best LoRA's style lives, block by block (``autolora explain``
    without pruning, on the loaded pipeline: 2 + 2 x blocks sampling passes; ``docs/explain.md``), into
    ``<out>/explain`` and the report. Adapters other than a plain LoRA are not mapped."""
    keep_top_k: int = 3
    """Adapters kept on disk: the best K (single objective) or the Pareto set, at most K."""
    confirm_top_k: int = 3
    """After the trials, re-score the top K feasible trials on ``eval.confirm_seeds``; the exported best is the
    confirmed one (at most ``keep_top_k``: only kept adapters can be re-scored; 0: no confirmation). The replay on
    the trial table (``docs/replay.md``): the top 5 or 10 exported the same adapters; the top 1 lost 0.02-0.08."""
    seed: int = 0
    """Sampler seed."""
    process_per_trial: bool = False
    """Run every trial in a fresh process (for GPUs whose memory leaks between trials)."""
    queue_only: bool = False
    """Create the study and queue ``trials`` trials for ``autolora worker`` processes; run none here."""
    workers: int = 0
    """Local worker processes sharing the study (0: trials run in this process)."""
    devices: list[str] = field(default_factory=list)
    """Devices handed to the workers round-robin (``cuda:0``, ``cuda:1``...); empty: model.device."""
    heartbeat_interval: int = 60
    """Seconds between a running trial's heartbeats in the storage; a trial silent for
    ``grace_period`` is failed by the next worker that starts a trial (0: no heartbeat)."""
    grace_period: int = 180
    """Seconds without a heartbeat after which a running trial counts as dead."""
    retry_failed: int = 1
    """How often a trial whose worker died is queued again with the same parameters."""
    storage_retries: int = 5
    """Reconnection attempts (with exponential backoff) when the storage connection drops."""

    def validate(self, where: str) -> None:
        _check(self.trials >= 0, f"{where}.trials", "an integer >= 0", self.trials)
        if self.timeout is not None:
            _check(self.timeout > 0, f"{where}.timeout", "a number of seconds > 0", self.timeout)
        _check(self.sampler in SAMPLERS, f"{where}.sampler", "|".join(SAMPLERS), self.sampler)
        _check(self.pruner in PRUNERS, f"{where}.pruner", "|".join(PRUNERS), self.pruner)
        _check(self.keep_top_k >= 1, f"{where}.keep_top_k", "an integer >= 1", self.keep_top_k)
        _check(
            0 <= self.confirm_top_k <= self.keep_top_k,
            f"{where}.confirm_top_k",
            f"an integer from 0 to keep_top_k ({self.keep_top_k}): only kept adapters can be re-scored",
            self.confirm_top_k,
        )
        _check(
            self.pruner_startup_trials >= 0,
            f"{where}.pruner_startup_trials",
            "an integer >= 0",
            self.pruner_startup_trials,
        )
        _check(self.workers >= 0, f"{where}.workers", "an integer >= 0", self.workers)
        _check(self.heartbeat_interval >= 0, f"{where}.heartbeat_interval", "seconds >= 0", self.heartbeat_interval)
        _check(
            self.grace_period > self.heartbeat_interval or self.heartbeat_interval == 0,
            f"{where}.grace_period",
            "more seconds than heartbeat_interval",
            self.grace_period,
        )
        _check(self.retry_failed >= 0, f"{where}.retry_failed", "an integer >= 0", self.retry_failed)
        _check(self.storage_retries >= 0, f"{where}.storage_retries", "an integer >= 0", self.storage_retries)
        for d in self.devices:
            ok = d == "cpu" or d == "cuda" or (d.startswith("cuda:") and d[5:].isdigit())
            _check(ok, f"{where}.devices", "cpu, cuda or cuda:N entries", d)
        if self.name is not None:
            ok = bool(self.name) and all(c.isalnum() or c in "-_." for c in self.name)
            _check(ok, f"{where}.name", "letters, digits, '-', '_' or '.'", self.name)


@dataclass
class RunConfig:
    """The sections every job's run shares: the base model, the data, the evaluation and the study.

    A job's config adds its own sections (``Config``: ``train`` for ``autolora tune``; ``FuseRunConfig``: ``fuse``),
    and the core knows only this one."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    study: StudyConfig = field(default_factory=StudyConfig)

    path_keys: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {("data", "style_images"), ("data", "prompts"), ("study", "out")}
    )
    """(section, key) of paths, made relative to the config file's folder when read from one."""
    path_list_keys: ClassVar[frozenset[tuple[str, str]]] = frozenset()
    """(section, key) of lists of ``PATH`` or ``NAME=PATH`` entries, read the same way."""
    legacy_sections: ClassVar[frozenset[str]] = frozenset()
    """Sections earlier versions wrote into this job's stored configs that it no longer has: read and dropped, so
    that an earlier run can still be resumed, exported or worked."""

    def validate(self, where: str = "config") -> RunConfig:
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate(f"{where}: {f.name}" if where else f.name)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def study_name(self) -> str:
        if self.study.name:
            return self.study.name
        return Path(self.data.style_images).resolve().name if self.data.style_images else "demo"

    @property
    def out_dir(self) -> Path:
        return Path(self.study.out) if self.study.out else Path("runs") / self.study_name

    @property
    def storage_url(self) -> str:
        return self.study.storage or f"sqlite:///{(self.out_dir / 'optuna.db').resolve()}"


@dataclass
class Config(RunConfig):
    """A whole ``autolora tune`` run: the shared sections and ``train``."""

    train: TrainConfig = field(default_factory=TrainConfig)


# -- loading ------------------------------------------------------------------------------------


def _type_ok(value: object, hint: object) -> tuple[bool, object]:
    """Check ``value`` against a simple type hint; return (ok, coerced value)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return True, None
        for arg in args:
            if arg is type(None):
                continue
            ok, coerced = _type_ok(value, arg)
            if ok:
                return ok, coerced
        return False, value
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            return False, value
        out = []
        for v in value:
            ok, c = _type_ok(v, item)
            if not ok:
                return False, value
            out.append(c)
        return True, out
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value  # type: ignore[arg-type]
    if hint is str:
        return isinstance(value, str), value
    return False, value


_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _describe(hint: object) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [_describe(a) for a in typing.get_args(hint) if a is not type(None)]
        return " or ".join(parts) + " (or null)"
    if origin is list:
        return f"a list of {_describe(typing.get_args(hint)[0]).removeprefix('an ').removeprefix('a ')}s"
    return _TYPE_WORDS.get(hint, str(hint))  # type: ignore[call-overload]


def _section_from_dict(cls: type, data: object, where: str) -> Any:
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise UserError(f"{where}: unknown key '{key}'{closest(str(key), names)}")
        ok, coerced = _type_ok(value, hints[key])
        if not ok:
            raise UserError(f"{where}.{key}: expected {_describe(hints[key])}, got {value!r}")
        kwargs[key] = coerced
    return cls(**kwargs)


C = typing.TypeVar("C", bound=RunConfig)


@typing.overload
def config_from_dict(data: dict[str, Any], where: str) -> Config: ...
@typing.overload
def config_from_dict(data: dict[str, Any], where: str, cls: type[C]) -> C: ...
def config_from_dict(data: dict[str, Any], where: str, cls: type[RunConfig] = Config) -> RunConfig:
    """Build a validated ``cls`` (a job's config) from a nested mapping; ``where`` prefixes messages."""
    sections = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key in cls.legacy_sections and key not in sections:
            continue
        if key not in sections:
            raise UserError(f"{where}: unknown section '{key}'{closest(str(key), sections)}")
        section_cls = typing.get_type_hints(cls)[key]
        kwargs[key] = _section_from_dict(section_cls, value or {}, f"{where}: {key}")
    config = cls(**kwargs)
    config.validate(where)
    return config


def read_config_file(path: Path, cls: type[RunConfig] = Config) -> dict[str, Any]:
    """Parse a YAML or TOML config file of a ``cls`` run; errors name the file and line."""
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")

    text = read_text(path, "config file")
    if path.suffix == ".toml":
        import tomllib

        try:
            data: object = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise UserError(f"{path}: not valid TOML: {e}") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise UserError(f"{path}: not valid YAML{line}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of sections (model, data, train, eval, study)")
    # Paths in a config file are relative to the file, not to where the command runs.
    for section, key in cls.path_keys:
        sec = data.get(section)
        if isinstance(sec, dict) and isinstance(sec.get(key), str) and not Path(sec[key]).is_absolute():
            sec[key] = str((path.parent / sec[key]).resolve())
    for section, key in cls.path_list_keys:
        sec = data.get(section)
        if isinstance(sec, dict) and isinstance(sec.get(key), list):
            sec[key] = [_relative_entry(e, path.parent) for e in sec[key]]
    return data


def split_named(entry: str) -> tuple[str | None, str]:
    """``NAME=PATH`` -> (NAME, PATH); a bare ``PATH`` (or one whose ``=`` follows a ``/``) -> (None, PATH)."""
    name, sep, value = entry.partition("=")
    if sep and name and "/" not in name and "\\" not in name:
        return name, value
    return None, entry


def _relative_entry(entry: object, folder: Path) -> object:
    """``PATH`` or ``NAME=PATH`` with a relative PATH made relative to ``folder``."""
    if not isinstance(entry, str):
        return entry
    name, value = split_named(entry)
    if Path(value).is_absolute():
        return entry
    resolved = str((folder / value).resolve())
    return f"{name}={resolved}" if name is not None else resolved


def parse_override(text: str) -> tuple[str, str, Any]:
    """Parse ``section.key=value`` (value in YAML syntax) from ``--set``."""
    import yaml

    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise UserError(f"--set {text}: expected section.key=value, for example train.batch_size=2")
    dotted, raw = text.split("=", 1)
    section, key = dotted.split(".", 1)
    try:
        value = yaml.safe_load(raw) if raw else None
    except yaml.YAMLError:
        value = raw
    return section, key, value


@typing.overload
def load_config(path: Path | None, overrides: list[tuple[str, str, Any]]) -> Config: ...
@typing.overload
def load_config(path: Path | None, overrides: list[tuple[str, str, Any]], cls: type[C]) -> C: ...
def load_config(
    path: Path | None,
    overrides: list[tuple[str, str, Any]],
    cls: type[RunConfig] = Config,
) -> RunConfig:
    """Config file (optional) + overrides (section, key, value) -> validated ``cls`` (default Config)."""
    data: dict[str, Any] = read_config_file(path, cls) if path else {}
    for section, key, value in overrides:
        sec = data.setdefault(section, {})
        if not isinstance(sec, dict):
            raise UserError(f"{path}: {section}: expected a mapping of keys")
        sec[key] = value
    return config_from_dict(data, str(path) if path else "config", cls)
