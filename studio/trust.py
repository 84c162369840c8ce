"""Trust levels: what a visitor of the page may choose, and how much work one request may ask for.

A **local** server (the default, on 127.0.0.1) is its own user's: every model field takes any spec (a typed
path, `hf:OWNER/REPO/FILE`, `ARCH/random`), because that user owns the machine. A **public** server (a Hugging
Face Space, where `SPACE_ID` is set, or `--public`) serves strangers, so:

- visitors choose only among the models the operator listed (`--clip A,B`, `STUDIO_STYLEGAN=name,name`) and the
  bundled demo models; no typed path, no `hf:` download, no `random`, no bare architecture name reaches a loader
  (the dropdowns take no custom value, and every handler checks again, since an API call skips the page);
- uploads are capped (`--max-upload-mb`, Gradio's `max_file_size`; images are also checked for pixels before
  decoding, by `studio.images.load_image`);
- every run stops at `--max-run-s` seconds, keeping its result like a Stop (the run is bounded whatever the
  settings; the settings' own limits bound memory);
- outputs are deleted after `--output-ttl-s` (`studio.outputs.sweep_all`: ours and Gradio's cache);
- each visitor has at most `--max-waiting` jobs waiting in the queue; one upload request carries at most
  `max_upload_files` files, and Gradio's cache holds at most `--upload-budget-mb` (`studio.ui.guard`); a run's
  uploads are deleted when it ends.

Both levels share the bounds that protect the server itself (failed loads freed, linear-time SVG parsing,
checkpoint shapes checked before allocation, one GPU queue). No torch here: the UI and the CLI import it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from studio.defaults import DEFAULT_CLIP, DEMO_CLIP, DEMO_GENERATOR

BUNDLED_CLIP = DEMO_CLIP  # the bundled demo CLIP (a few MB, offline): always offered
BUNDLED_GENERATOR = DEMO_GENERATOR


def _names(value: str | None) -> tuple[str, ...]:
    return tuple(s.strip() for s in (value or "").split(",") if s.strip())


@dataclass(frozen=True)
class Policy:
    """What one server lets its visitors do. `Policy()` is the local one; `Policy.public_from(...)` the other.

    clip_models / generators: the operator's lists (first = the default); on a public server the only choices.
    max_upload_mb: Gradio refuses bigger uploads before our code runs. max_run_s: a run is stopped (keeping its
    result) after this long; None = no limit. output_ttl_s: outputs older than this are deleted; None = kept.
    max_waiting: jobs one visitor may have waiting in the queue; None = no share. upload_budget_mb: bytes Gradio's
    cache may hold before uploads are refused; None = no budget. max_upload_files: files in one upload request (the
    Lens gallery's 64)."""

    public: bool = False
    clip_models: tuple[str, ...] = ()
    generators: tuple[str, ...] = ()
    max_upload_mb: float = 512.0
    max_run_s: float | None = None
    output_ttl_s: float | None = None
    max_waiting: int | None = None
    upload_budget_mb: float | None = None
    max_upload_files: int = 64
    loss_models: tuple[str, ...] = field(default=("RN101/openai", "RN50/openai"))

    # -------------------------------------------------------------------------------------------- the choices
    def clip_choices(self, offered: list[str]) -> list[str]:
        """The CLIP dropdowns' choices: the operator's list first; locally also the common specs `offered`."""
        names = list(self.clip_models)
        if BUNDLED_CLIP not in names:
            names.append(BUNDLED_CLIP)
        if not self.public:
            names += [s for s in offered if s not in names]
        return names

    def generator_choices(self, offered: list[str]) -> list[str]:
        names = list(self.generators)
        if BUNDLED_GENERATOR not in names:
            names.append(BUNDLED_GENERATOR)
        if not self.public:
            names += [s for s in offered if s not in names]
        return names

    def loss_choices(self) -> list[str]:
        """CLIPasso's loss models (besides "same as the CLIP model"): on a public server only listed ResNets."""
        if self.public:
            return [s for s in self.clip_models if s.split("/")[0].split(":")[0].startswith("RN")]
        return list(self.loss_models)

    @property
    def custom_values(self) -> bool:
        """Whether model dropdowns accept a typed value."""
        return not self.public

    # ------------------------------------------------------------------------------------------------- checks
    def check_clip(self, spec: object, name: str = "model", extra: tuple[str, ...] = ()) -> str:
        """`spec` if a visitor may load it here, else `ValueError` naming the argument and the choices."""
        return self._check(spec, name, (*self.clip_choices([]), *extra), "CLIP model")

    def check_generator(self, spec: object, name: str = "generator") -> str:
        return self._check(spec, name, tuple(self.generator_choices([])), "generator")

    def _check(self, spec: object, name: str, allowed: tuple[str, ...], what: str) -> str:
        if not isinstance(spec, str) or not spec.strip():
            raise ValueError(f"`{name}` must be a {what} name, got {spec!r:.80}")
        spec = spec.strip()
        if self.public and spec not in allowed:
            # The value is not echoed in full: on a public server it may be a probe for a path.
            raise ValueError(f"`{name}` {spec[:40]!r} is not offered on this server, which runs only the "
                             f"{what}s its operator listed: {', '.join(allowed)}")
        return spec

    # ------------------------------------------------------------------------------------------- constructors
    @classmethod
    def from_settings(cls, *, public: bool | None = None, clip: str | None = None, generators: str | None = None,
                      max_upload_mb: float | None = None, max_run_s: float | None = None,
                      output_ttl_s: float | None = None, max_waiting: int | None = None,
                      upload_budget_mb: float | None = None, environ: dict | None = None) -> Policy:
        """The server's policy from its flags, with the environment filling what they leave out. `public=None`
        means "public when on a Space" (`SPACE_ID` set, or STUDIO_PUBLIC=1). Limits left as None take the
        level's defaults: public 20 MB uploads, 600 s per run, outputs kept 1 h, 2 waiting jobs per visitor, 2 GB
        of uploads and served files; local 512 MB, no run, age, queue share or upload budget limit."""
        env = os.environ if environ is None else environ
        if public is None:
            public = bool(env.get("SPACE_ID")) or env.get("STUDIO_PUBLIC", "").lower() in ("1", "true", "yes")
        clips = _names(clip if clip is not None else env.get("STUDIO_CLIP")) or (DEFAULT_CLIP,)
        gens = _names(generators if generators is not None else env.get("STUDIO_STYLEGAN")) or (BUNDLED_GENERATOR,)
        defaults = (20.0, 600.0, 3600.0) if public else (512.0, None, None)
        mb = max_upload_mb if max_upload_mb is not None else defaults[0]
        run_s = max_run_s if max_run_s is not None else defaults[1]
        ttl = output_ttl_s if output_ttl_s is not None else defaults[2]
        waiting = max_waiting if max_waiting is not None else (2 if public else None)
        budget = upload_budget_mb if upload_budget_mb is not None else (2048.0 if public else None)
        for arg, value in (("max_upload_mb", mb), ("max_run_s", run_s), ("output_ttl_s", ttl),
                           ("max_waiting", waiting), ("upload_budget_mb", budget)):
            if value is not None and not value > 0:
                raise ValueError(f"`{arg}` must be a positive number, got {value!r}")
        if budget is not None and budget < mb:
            raise ValueError(f"`upload_budget_mb` ({budget:g}) must be at least `max_upload_mb` ({mb:g})")
        return cls(public=public, clip_models=clips, generators=gens, max_upload_mb=float(mb),
                   max_run_s=None if run_s is None else float(run_s),
                   output_ttl_s=None if ttl is None else float(ttl),
                   max_waiting=None if waiting is None else int(waiting),
                   upload_budget_mb=None if budget is None else float(budget))

    @property
    def default_clip(self) -> str:
        return self.clip_models[0] if self.clip_models else DEFAULT_CLIP

    @property
    def default_generator(self) -> str:
        return self.generators[0] if self.generators else BUNDLED_GENERATOR

    def describe(self) -> str:
        """One line for the server log and the page header."""
        if not self.public:
            return "local server: every model field takes any spec"
        limit = f"{self.max_run_s:g} s per run" if self.max_run_s else "no run limit"
        extra = "".join([f", {self.max_waiting} waiting jobs per visitor" if self.max_waiting else "",
                         f", {self.upload_budget_mb:g} MB of uploads in all" if self.upload_budget_mb else ""])
        return (f"public server: models limited to the operator's list, uploads up to {self.max_upload_mb:g} MB, "
                f"{limit}{extra}")
