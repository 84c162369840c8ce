"""What a task is, and the one source of every task's defaults and limits (no torch here: the UI reads it).

A task's settings are a config dataclass whose fields are declared with `param(...)`: the default, the limits,
where the default comes from, and what a control for it looks like. From that one declaration come

* the checks (`resolve(config, overrides)` raises `ValueError` naming the argument, the range and the value,
  with the same wording for every task),
* the controls of the page (`specs(config)` gives plain `ParamSpec`s that `studio.ui.common.control` turns into
  sliders, checkboxes and dropdowns), and the command line's flags.

Declarations only: the registry (task name → its pipeline class, loaded on first use) lives with the tasks, in
`pipelines/registry.py`, and this module never imports `pipelines`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

SEED_MAX = 2**32 - 1  # one seed range for every task (NumPy's and diffusers' generators take 32-bit seeds)
MAX_SEED_BATCH = 32  # seeds one batched run optimises together (`--batch`; each seed holds a graph of its own)
MAX_PROMPT_CHARS = 1000  # CLIP reads 77 tokens (~300 characters); longer texts are refused, not cut silently


# ---------------------------------------------------------------------------------------------- declaring settings
def param(default: Any, lo: float | None = None, hi: float | None = None, *, help: str, choices: Sequence | None = None,
          ui: tuple[float, float] | None = None, cpu: Any = None, step: float | None = None, label: str | None = None,
          control: bool = True, nullable: bool = False) -> Any:
    """A config field: `default` within [`lo`, `hi`] (or one of `choices`), with `help` saying what it does and
    where the default comes from. `ui`: a narrower slider range for the page; `cpu`: the page's starting value
    on a CPU (the papers' settings take a GPU); `control=False`: no control on the page (method internals);
    `nullable`: None is allowed too (meaning "automatic")."""
    meta = {"lo": lo, "hi": hi, "help": help, "choices": tuple(choices) if choices is not None else None, "ui": ui,
            "cpu": cpu, "step": step, "label": label, "control": control, "nullable": nullable}
    if isinstance(default, (list, dict, set)):
        raise TypeError("param defaults must be immutable (use a tuple)")
    return dataclasses.field(default=default, metadata={"studio": meta})


@dataclass(frozen=True)
class ParamSpec:
    """One setting as plain data, for the page and the command line."""

    name: str
    kind: str  # "int", "float", "bool", "choice", "text", "tuple"
    default: Any
    lo: float | None
    hi: float | None
    help: str
    choices: tuple | None = None
    ui_lo: float | None = None  # the page's slider range (the limits unless narrowed)
    ui_hi: float | None = None
    cpu_default: Any = None
    step: float | None = None
    label: str | None = None
    control: bool = True
    nullable: bool = False

    def start_value(self, cpu: bool = False) -> Any:
        """The value a control starts at: the CPU starting value on a CPU where one is set, else the default."""
        return self.cpu_default if cpu and self.cpu_default is not None else self.default


def _kind(default: Any, meta: dict) -> str:
    if meta["choices"] is not None:
        return "choice"
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, tuple):
        return "tuple"
    return "text"


def specs(config: Any) -> dict[str, ParamSpec]:
    """The `ParamSpec` of every `param` field of a config dataclass (class or instance), in declaration order.
    For an instance, its values are the defaults."""
    out = {}
    for f in dataclasses.fields(config):
        meta = f.metadata.get("studio")
        if meta is None:
            continue
        default = getattr(config, f.name) if not isinstance(config, type) else f.default
        ui = meta["ui"] or (meta["lo"], meta["hi"])
        out[f.name] = ParamSpec(f.name, _kind(f.default, meta), default, meta["lo"], meta["hi"], meta["help"],
                                meta["choices"], ui[0], ui[1], meta["cpu"], meta["step"], meta["label"],
                                meta["control"], meta["nullable"])
    return out


def check_value(spec: ParamSpec, value: Any) -> Any:
    """`value` if it is allowed for `spec`, else `ValueError` naming the argument, what is allowed and the value.
    Integral floats pass for integers (a page's Number sends 3.0); nothing is clamped or rounded."""
    name = f"`{spec.name}`"
    if value is None and spec.nullable:
        return None
    if spec.kind == "choice":
        if value not in spec.choices:
            raise ValueError(f"{name} must be one of {list(spec.choices)}, got {value!r}")
        return value
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")
        return value
    if spec.kind in ("int", "float"):
        integer = spec.kind == "int"
        if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:  # numpy scalars
            value = value.item()
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok and integer and isinstance(value, float):
            ok = value.is_integer()
            value = int(value) if ok else value
        lo = -math.inf if spec.lo is None else spec.lo
        hi = math.inf if spec.hi is None else spec.hi
        if not ok or not lo <= value <= hi:
            what = "an integer" if integer else "a number"
            raise ValueError(f"{name} must be {what} in [{_num(spec.lo)}, {_num(spec.hi)}], got {value!r}")
        return int(value) if integer else float(value)
    if spec.kind == "text":
        if not isinstance(value, str):
            raise ValueError(f"{name} must be text, got {value!r}")
        _check_encodable(value, spec.name)
        return value
    if spec.kind == "tuple":
        if not isinstance(value, (tuple, list)):
            raise ValueError(f"{name} must be a list, got {value!r}")
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value


def _num(x: float | None) -> str:
    if x is None:
        return "∞"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:g}"


def resolve(config: Any, overrides: dict[str, Any]) -> Any:
    """A copy of the config instance with `overrides` applied, every field checked.

    An unknown name raises `ValueError` listing the valid ones; a value outside its limits raises `ValueError`
    naming the argument (see `check_value`). Fields not overridden keep the config's values, checked as well."""
    fields = specs(config)
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for "
                         f"{type(config).__name__}; valid: {', '.join(fields)}")
    values = {name: check_value(spec, overrides.get(name, getattr(config, name))) for name, spec in fields.items()}
    return dataclasses.replace(config, **values)


def run_settings(config: Any, **inputs: Any) -> dict[str, Any]:
    """A result's `settings`: its JSON inputs (a prompt, ...) and every field of the resolved config, as JSON values
    (tuples become lists), so that running the task again with them reproduces the result."""
    from studio.progress import json_safe

    return {**json_safe(inputs), **json_safe(dataclasses.asdict(config))}


def check_seed(seed: Any, name: str = "seed") -> int:
    """The one seed check: an integer in [0, SEED_MAX]."""
    return check_value(ParamSpec(name, "int", 0, 0, SEED_MAX, ""), seed)


def check_text(value: Any, name: str, *, allow_empty: bool = False, max_chars: int = MAX_PROMPT_CHARS) -> str:
    """Stripped text, refused (`ValueError` naming `name`) when not text, empty, or longer than `max_chars`."""
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise ValueError(f"`{name}` must be non-empty text, got {value!r:.80}")
    if len(value) > max_chars:
        raise ValueError(f"`{name}` must be at most {max_chars} characters, got {len(value)}")
    _check_encodable(value, name)
    return value.strip()


def _check_encodable(value: str, name: str) -> None:
    """Refuse a lone surrogate ("\\ud800", which a JSON API call can send): no UTF-8 file, PNG text chunk or
    tokenizer takes it, and it used to fail only when the finished result was saved, losing the run (issue 22 #8)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"`{name}` holds a lone surrogate (U+{ord(value[err.start]):04X} at character {err.start}), "
                         f"which is not text") from None


def check_texts(value: Any, name: str, max_items: int) -> list[str]:
    """A list of texts from None, one text (lines or `|`-separated) or a list; each checked like `check_text`."""
    if value is None:
        return []
    if isinstance(value, str):
        items = [s for s in value.replace("|", "\n").splitlines()]
    elif isinstance(value, (list, tuple)):
        items = list(value)
        for s in items:
            if not isinstance(s, str):
                raise ValueError(f"`{name}` must be texts, got {value!r:.80}")
    else:
        raise ValueError(f"`{name}` must be text or a list of texts, got {value!r:.80}")
    texts = [check_text(s, name) for s in items if s.strip()]
    if len(texts) > max_items:
        raise ValueError(f"`{name}` may hold at most {max_items} texts, got {len(texts)}")
    return texts


# ------------------------------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class Input:
    """A per-item input of a task (what a batch run varies), as opposed to its settings.

    kind: "text" (a prompt), "image" (a photo: path, PIL, array), "state" (an earlier result or latent)."""

    name: str
    kind: str
    required: bool = True
    help: str = ""


@dataclass(frozen=True)
class Task:
    """A registered task: its config (defaults, limits) and how to run it on a pipeline.

    `iterate(pipe, **inputs_and_settings)` is the task's generator (`getattr(pipe, method)`), `run(...)` drains it.
    `models`: the kinds of model its pipeline is built from ("clip", "loss_clip", "generator", "t2i").
    `load(**models)` builds the pipeline from those specs (the real loading code; tests pass tiny components to
    the pipeline class instead)."""

    name: str
    title: str
    config: type
    pipeline: type
    method: str
    inputs: tuple[Input, ...]
    models: tuple[str, ...]
    load: Callable[..., Any]
    # the pipeline method that runs several seeds of one item together, `method(seeds=[...], **kwargs)`, ending
    # with a result whose `results[i]` is seed i's, each equal to its own run's (None: one seed at a time)
    batch_method: str | None = None
    batching: tuple[str, ...] = ()  # the registered tasks that have one (the registry fills it in), for messages

    def iterate(self, pipe: Any, **kwargs: Any) -> Iterator:
        return getattr(pipe, self.method)(**kwargs)

    def check_batch(self, size: int) -> None:
        """Refuse `size` > 1 seeds in one run for a task that runs one seed at a time (naming those that can)."""
        if size > 1 and self.batch_method is None:
            raise ValueError(f"task {self.name!r} runs one seed at a time; tasks that batch seeds: "
                             f"{', '.join(self.batching) or 'none'}")

    def iterate_seeds(self, pipe: Any, seeds: list[int], **kwargs: Any) -> Iterator:
        self.check_batch(max(2, len(seeds)))  # a task without a batched method has no iterate_seeds at all
        return getattr(pipe, self.batch_method)(seeds=seeds, **kwargs)

    def run(self, pipe: Any, callback: Callable | None = None, **kwargs: Any) -> Any:
        from studio.runner import drain

        return drain(self.iterate(pipe, **kwargs), callback)

    def specs(self) -> dict[str, ParamSpec]:
        return specs(self.config)
