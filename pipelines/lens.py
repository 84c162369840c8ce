"""CLIP Lens: zero-shot labels, text search over images, and image − text + text arithmetic.

Zero-shot classification with prompt ensembles follows Radford et al. 2021 (§3.1.4); the arithmetic
query (an image's embedding minus one text plus another) is the classic "dog − 'dog' + 'cat'" probe.

On the run protocol (`studio.progress`): `iter_classify(image, labels, **settings)` yields one `Progress` (the
image as its preview) and then `LensLabels`; `iter_search(images, query, **settings)` and
`iter_arithmetic(images, query_image, minus, plus, **settings)` and `iter_image_search(images, query_image,
**settings)` (image → image) yield a `Progress` for each gallery image they
embed (that image as the preview, its similarity as the metric) and end with a `LensRanking`. Send "stop" (or
close the generator) to end early: the ranking then holds the images embedded so far, with `stopped=True`.
`classify`, `search` and `arithmetic` drain them. Settings and their limits are each task's config
(`LensClassifyConfig`, `LensSearchConfig`, `LensArithmeticConfig`, `LensImageSearchConfig`); the tasks are
registered as `lens-classify`, `lens-search`, `lens-arithmetic` and `lens-image-search`; the
persistent index of a folder is `pipelines/lens_index.py`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from pipelines.registry import register
from studio.images import MIN_SIDE, load_image, to_pil, to_tensor
from studio.outputs import new_folder
from studio.progress import Progress, Result, json_safe
from studio.prompts import TEMPLATE_SETS
from studio.runner import drain
from studio.scorer import CLIPScorer, get_scorer, oom_guard
from studio.tasks import SEED_MAX, Input, Task, check_text, param, resolve

MAX_LABELS = 200  # candidate labels per image: the prompt ensemble encodes labels × templates texts
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")  # what a download's name keeps of an upload's name
MAX_GALLERY = 64  # images per search: each is embedded on every search (nothing is indexed)
MAX_WEIGHT = 5.0  # largest arithmetic text weight accepted (the page's slider stops at 3)
TEMPLATE_CHOICES = ("auto", *TEMPLATE_SETS)


@dataclass
class LensConfig:
    """What every Lens task's settings hold; each task's config adds the settings it reads (and only those, so that
    a setting a task would ignore is refused by name)."""

    seed: int = param(0, 0, SEED_MAX, control=False,
                      help="unused: every Lens task is deterministic; kept so that every task's settings have one")


@dataclass
class LensClassifyConfig(LensConfig):
    """lens-classify: the prompt ensemble of its labels."""

    templates: str = param("auto", choices=TEMPLATE_CHOICES, label="Prompt templates",
                           help="prompt ensemble of the zero-shot labels: 'curated' (the 7 templates of CLIP's "
                                "prompt-engineering notebook, Radford et al. 2021), 'imagenet' (its 80), 'shapes' "
                                "(the demo CLIP's caption style) or 'none'; 'auto': 'shapes' for the demo CLIP, "
                                f"else 'curated'. Used for the labels (at most {MAX_LABELS}) only")


@dataclass
class LensSearchConfig(LensConfig):
    """lens-search: a text query ranks the gallery; nothing to set."""


@dataclass
class LensArithmeticConfig(LensConfig):
    """lens-arithmetic: how far the texts move the query image."""

    weight: float = param(1.0, 0.0, MAX_WEIGHT, ui=(0.0, 3.0), step=0.1, label="Text weight",
                          help="arithmetic: query = image − weight·minus + weight·plus (unit embeddings), "
                               f"ranking a gallery of at most {MAX_GALLERY} images; 1.0: the plain "
                               "'dog − \"dog\" + \"cat\"' probe; 0: the image alone")


@dataclass
class LensImageSearchConfig(LensConfig):
    """lens-image-search: an image query ranks the gallery; nothing to set."""


@dataclass
class LensLabels(Result):
    """Labels sorted by probability (highest first). `image`: the input image (saved as `lens-classify.png` with
    the labels and their probabilities in its metadata, next to `lens-classify.json`); `scores`: {label: prob};
    `templates`: the template set used ("auto" resolved)."""

    task = "lens-classify"
    labels: list[str] = field(default_factory=list)
    probs: list[float] = field(default_factory=list)
    templates: str = ""

    def save(self, folder: str | Path | None = None, video: str = "mp4", fps: float = 12.0) -> dict[str, Path]:
        """The base files plus `lens-classify.json`: labels, probabilities and the template set, in order."""
        out = _folder(folder, self.task)
        paths = super().save(out, video, fps)
        paths["json"] = _write_json(out / f"{self.task}.json", {"labels": self.labels, "probs": self.probs,
                                                                "templates": self.templates})
        return paths


@dataclass
class LensRanking(Result):
    """Gallery images sorted by similarity to a query (highest first).

    `order`: indices into the input gallery; `similarities`: cosine similarity × 100, in `order`; `images`: the
    gallery in that order (each saved as `<task>-<rank>.png` with its rank, index and similarity in its
    metadata, next to `<task>.json`); `query`: what was searched for, as text; `scores`: {"top_similarity"}. A
    stopped run ranks the images embedded before the stop."""

    task = "lens-ranking"
    order: list[int] = field(default_factory=list)
    similarities: list[float] = field(default_factory=list)
    query: str = ""
    names: list[str] = field(default_factory=list)  # in `order`: the file name of each image given as a path, or ""

    def name(self, i: int) -> str:
        return self.names[i] if i < len(self.names) else ""

    def image_metadata(self, i: int) -> dict[str, Any]:
        return {**self.metadata(), "rank": i + 1, "gallery_index": self.order[i],
                "similarity": round(self.similarities[i], 4), **({"name": self.name(i)} if self.name(i) else {})}

    def save(self, folder: str | Path | None = None, video: str = "mp4", fps: float = 12.0) -> dict[str, Path]:
        """The base files plus `<task>.json`: the query, the order, the similarities and the names. An image given
        as a file keeps its name in its PNG's: `<task>-<rank>-<name>.png` (issue 29: `lens-search-0.png`... said
        nothing of which upload each was)."""
        out = _folder(folder, self.task)
        paths = super().save(out, video, fps)
        for i in range(len(self.images)):
            stem = _SAFE.sub("_", Path(self.name(i)).stem)[:60].strip("._")
            if stem and f"png{i}" in paths:
                named = paths[f"png{i}"].with_name(f"{self.task}-{i}-{stem}.png")
                os.replace(paths[f"png{i}"], named)
                paths[f"png{i}"] = named
        paths["json"] = _write_json(out / f"{self.task}.json", {"query": self.query, "order": self.order,
                                                                "similarities": self.similarities,
                                                                "names": [self.name(i) for i in
                                                                          range(len(self.order))]})
        return paths


@dataclass
class LensSearchRanking(LensRanking):
    task = "lens-search"


@dataclass
class LensArithmeticRanking(LensRanking):
    task = "lens-arithmetic"


@dataclass
class LensImageRanking(LensRanking):
    task = "lens-image-search"


def _folder(folder: str | Path | None, task: str) -> Path:
    out = Path(folder) if folder is not None else new_folder(task)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _write_json(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(json_safe(data), indent=1, ensure_ascii=False), encoding="utf-8")
    return path


def parse_labels(text: str | Sequence[str]) -> list[str]:
    """Labels from comma- or newline-separated text (or a list of texts), stripped, de-duplicated, order kept."""
    if isinstance(text, str):
        items = re.split(r"[,\n]", text)
    elif isinstance(text, (list, tuple)) and all(isinstance(s, str) for s in text):
        items = list(text)
    else:
        raise ValueError(f"`labels` must be text (comma or newline separated) or a list of texts, got {text!r:.80}")
    labels = list(dict.fromkeys(check_text(s, "labels") for s in items if s.strip()))
    if not labels:
        raise ValueError(f"`labels` must name at least one label (comma or newline separated), got {text!r:.80}")
    if len(labels) > MAX_LABELS:
        raise ValueError(f"`labels` may hold at most {MAX_LABELS} labels, got {len(labels)}")
    return labels


def _optional_text(value: Any, name: str) -> str:
    """'' for None, else checked text (may be empty)."""
    if value is not None and not isinstance(value, str):
        raise ValueError(f"`{name}` must be text (or empty), got {value!r:.80}")
    return "" if value is None else check_text(value, name, allow_empty=True)


def _image_tensor(image: Any, name: str) -> torch.Tensor:
    """(1, 3, H, W) floats in [0, 1] from anything `studio.images.to_tensor` takes; a tensor is checked too (one
    image, finite, sides of at least `MIN_SIDE`), as `load_image` checks the rest."""
    x = to_tensor(image, name)
    if x.shape[0] != 1:
        raise ValueError(f"`{name}` must be one image, got a batch of {x.shape[0]}")
    if not torch.isfinite(x).all():
        raise ValueError(f"`{name}` holds NaN or infinite values")
    if min(x.shape[-2:]) < MIN_SIDE:
        raise ValueError(f"`{name}` is {x.shape[-1]}×{x.shape[-2]} pixels; each side must be at least {MIN_SIDE}")
    return x


class CLIPLensPipeline:
    """Zero-shot labels, search and embedding arithmetic on the shared scorer.

    >>> lens = CLIPLensPipeline.from_pretrained("shapes-clip")  # doctest: +SKIP
    >>> lens.classify("photo.png", "a red circle, a blue square").labels[0]  # doctest: +SKIP
    >>> lens.search(["a.png", "b.png"], "a red circle").save("found/")  # doctest: +SKIP
    """

    def __init__(self, scorer: CLIPScorer, config: LensConfig | None = None):
        self.scorer = scorer
        self.config = config  # defaults for the settings a task's config shares with it (None: the configs')

    def _resolve(self, kind: type, settings: dict[str, Any]) -> LensConfig:
        """The task's own config (`kind`) with `settings` applied: a setting the task does not read is refused."""
        base = kind()
        if self.config is not None:
            shared = {f.name for f in dataclasses.fields(kind)} & {f.name for f in dataclasses.fields(self.config)}
            base = dataclasses.replace(base, **{n: getattr(self.config, n) for n in shared})
        return resolve(base, settings)

    @classmethod
    def from_pretrained(cls, spec: str | None = None, device: str | None = None, **kwargs: Any) -> "CLIPLensPipeline":
        return cls(get_scorer(spec, device=device), **kwargs)

    # ------------------------------------------------------------------------------------------------ classify
    def classify(self, image: Any, labels: str | Sequence[str], *, callback: Callable | None = None,
                 **settings: Any) -> LensLabels:
        """Run `iter_classify` to the end; `callback(step, total, preview)` returning False stops it."""
        return drain(self.iter_classify(image, labels, **settings), callback)

    def iter_classify(self, image: Any, labels: str | Sequence[str], **settings: Any
                      ) -> Iterator[Progress | LensLabels]:
        """Zero-shot probabilities of `labels` for `image`, with a prompt-template ensemble: one step."""
        t0 = time.perf_counter()
        # 1. check inputs
        cfg = self._resolve(LensClassifyConfig, settings)
        names = parse_labels(labels)
        x = _image_tensor(image, "image")
        templates = cfg.templates
        if templates == "auto":  # the demo model was trained on its own caption style
            templates = "shapes" if self.scorer.is_demo else "curated"
        # 2. score
        with oom_guard("CLIP Lens labels"):
            probs = self.scorer.rank(x, names, templates)[0].tolist()
        # 3. package, highest first
        order = sorted(range(len(names)), key=lambda i: -probs[i])
        names, probs = [names[i] for i in order], [probs[i] for i in order]
        preview = to_pil(x)
        stopped = (yield Progress(1, 1, preview, {"top_prob": probs[0]})) == "stop"
        yield LensLabels(image=preview, labels=names, probs=probs, templates=templates,
                         scores=dict(zip(names, probs)), seed=cfg.seed, timings={"total_s": time.perf_counter() - t0},
                         settings={"labels": names, **_settings(cfg)}, stopped=stopped, notice=self.scorer.notice,
                         steps_run=1)

    # -------------------------------------------------------------------------------------------------- search
    def search(self, images: Sequence[Any], query: str, *, callback: Callable | None = None,
               **settings: Any) -> LensRanking:
        """Run `iter_search` to the end; `callback(step, total, preview)` returning False stops it."""
        return drain(self.iter_search(images, query, **settings), callback)

    def iter_search(self, images: Sequence[Any], query: str, **settings: Any) -> Iterator[Progress | LensRanking]:
        """Rank `images` by similarity to a text `query`: one step per image embedded."""
        t0 = time.perf_counter()
        cfg = self._resolve(LensSearchConfig, settings)
        query = check_text(query, "query")
        gallery = self._gallery(images)
        with torch.no_grad(), oom_guard("CLIP Lens search"):
            q = self.scorer.encode_text([query])[0]
        yield from self._rank(LensSearchRanking, gallery, q, query, {"query": query, **_settings(cfg)}, cfg, t0,
                              self._names(images))

    # ---------------------------------------------------------------------------------------------- arithmetic
    def arithmetic(self, images: Sequence[Any], query_image: Any, minus: str | None = None,
                   plus: str | None = None, *, callback: Callable | None = None, **settings: Any) -> LensRanking:
        """Run `iter_arithmetic` to the end; `callback(step, total, preview)` returning False stops it."""
        return drain(self.iter_arithmetic(images, query_image, minus, plus, **settings), callback)

    def iter_arithmetic(self, images: Sequence[Any], query_image: Any, minus: str | None = None,
                        plus: str | None = None, **settings: Any) -> Iterator[Progress | LensRanking]:
        """Rank `images` against normalise(e(query_image) − w·e(minus) + w·e(plus)) (e.g. dog − "dog" + "cat"),
        w the `weight` setting: one step per image embedded."""
        t0 = time.perf_counter()
        # 1. check inputs
        cfg = self._resolve(LensArithmeticConfig, settings)
        minus, plus = _optional_text(minus, "minus"), _optional_text(plus, "plus")
        if not minus and not plus:
            raise ValueError("`minus` and `plus` are both empty: give at least one text to subtract or add")
        x = _image_tensor(query_image, "query_image")
        gallery = self._gallery(images)
        # 2. build the query
        with torch.no_grad(), oom_guard("CLIP Lens arithmetic"):
            q = self.scorer.encode_image(x)[0]
            if minus:
                q = q - cfg.weight * self.scorer.encode_text([minus])[0]
            if plus:
                q = q + cfg.weight * self.scorer.encode_text([plus])[0]
            q = F.normalize(q, dim=-1)
        label = "image" + (f" − “{minus}”" if minus else "") + (f" + “{plus}”" if plus else "")
        # 3. rank the gallery
        yield from self._rank(LensArithmeticRanking, gallery, q, label,
                              {"minus": minus, "plus": plus, **_settings(cfg)}, cfg, t0, self._names(images))

    # -------------------------------------------------------------------------------------------- image search
    def image_search(self, images: Sequence[Any], query_image: Any, *, callback: Callable | None = None,
                     **settings: Any) -> LensRanking:
        """Run `iter_image_search` to the end; `callback(step, total, preview)` returning False stops it."""
        return drain(self.iter_image_search(images, query_image, **settings), callback)

    def iter_image_search(self, images: Sequence[Any], query_image: Any, **settings: Any
                          ) -> Iterator[Progress | LensRanking]:
        """Rank `images` by similarity to `query_image` alone (image → image): one step per image embedded."""
        t0 = time.perf_counter()
        cfg = self._resolve(LensImageSearchConfig, settings)
        x = _image_tensor(query_image, "query_image")
        gallery = self._gallery(images)
        with torch.no_grad(), oom_guard("CLIP Lens image search"):
            q = self.scorer.encode_image(x)[0]
        yield from self._rank(LensImageRanking, gallery, q, "image", _settings(cfg), cfg, t0, self._names(images))

    # ------------------------------------------------------------------------------------------------- helpers
    def _gallery(self, images: Any) -> list[tuple[Any, Image.Image]]:
        """(what to embed, PIL image) for each gallery image, all checked before any is embedded."""
        if images is not None and not isinstance(images, (list, tuple)):
            raise ValueError(f"`images` must be a list of images, got {type(images).__name__}")
        if not images:
            raise ValueError("`images` must hold at least one image, got none")
        if len(images) > MAX_GALLERY:
            raise ValueError(f"`images` may hold at most {MAX_GALLERY} images, got {len(images)}")
        out = []
        for i, im in enumerate(images):
            name = f"images[{i}]"
            if torch.is_tensor(im):  # embedded as given (a PIL copy would be rounded to 8 bits)
                x = _image_tensor(im, name)
                out.append((x, to_pil(x)))
            else:  # decoded once; the tensor is made when it is embedded (64 float copies would take ~800 MB)
                pil = load_image(im, name)
                out.append((pil, pil))
        return out

    @staticmethod
    def _names(images: Sequence[Any]) -> list[str]:
        """The file name of each gallery image given as a path (an upload keeps its name there), else ""."""
        return [Path(im).name if isinstance(im, (str, os.PathLike)) else "" for im in images]

    def _rank(self, kind: type[LensRanking], gallery: list[tuple[Any, Image.Image]], q: torch.Tensor,
              query: str, settings: dict[str, Any], cfg: LensConfig, t0: float, names: list[str] | None = None
              ) -> Iterator[Progress | LensRanking]:
        """Embed the gallery one image a step (similarity to the unit query `q`), then rank what was embedded."""
        sims: list[float] = []
        stopped = False
        t1 = time.perf_counter()
        with oom_guard("CLIP Lens image embedding"):
            for i, (item, pil) in enumerate(gallery):
                with torch.no_grad():
                    emb = self.scorer.encode_image(to_tensor(item, f"images[{i}]"))[0]
                sims.append(100.0 * float(emb @ q))
                if (yield Progress(i + 1, len(gallery), pil, {"similarity": sims[-1]})) == "stop":
                    stopped = True
                    break
        t_embed = time.perf_counter() - t1
        order = sorted(range(len(sims)), key=lambda i: -sims[i])  # stable: ties keep the gallery order
        ranked = [sims[i] for i in order]
        names = names or [""] * len(gallery)
        yield kind(images=[gallery[i][1] for i in order], order=order, similarities=ranked, query=query,
                   names=[names[i] for i in order],
                   scores={"top_similarity": ranked[0]} if ranked else {}, seed=cfg.seed,
                   timings={"embed_s": t_embed, "per_step_s": t_embed / max(1, len(sims)),
                            "total_s": time.perf_counter() - t0},
                   settings=settings, stopped=stopped, notice=self.scorer.notice, steps_run=len(sims))


def _settings(cfg: LensConfig) -> dict[str, Any]:
    return json_safe(dataclasses.asdict(cfg))


def _load(clip: str | None = None, device: str | None = None) -> CLIPLensPipeline:
    return CLIPLensPipeline.from_pretrained(clip, device=device)


_GALLERY = Input("images", "images", help=f"the images to rank: a list of images (paths, PIL, arrays), at most "
                                          f"{MAX_GALLERY}")
register(Task(name="lens-classify", title="Zero-shot labels (CLIP Lens)", config=LensClassifyConfig,
              pipeline=CLIPLensPipeline, method="iter_classify", models=("clip",), load=_load,
              inputs=(Input("image", "image", help="the image to label"),
                      Input("labels", "text", help=f"candidate labels, comma or newline separated; at most "
                                                   f"{MAX_LABELS}"))))
register(Task(name="lens-search", title="Text search over images (CLIP Lens)", config=LensSearchConfig,
              pipeline=CLIPLensPipeline, method="iter_search", models=("clip",), load=_load,
              inputs=(_GALLERY, Input("query", "text", help="what to look for"))))
register(Task(name="lens-arithmetic", title="Image − text + text (CLIP Lens)", config=LensArithmeticConfig,
              pipeline=CLIPLensPipeline, method="iter_arithmetic", models=("clip",), load=_load,
              inputs=(_GALLERY, Input("query_image", "image", help="the image to start from"),
                      Input("minus", "text", required=False, help="a text to subtract (e.g. dog)"),
                      Input("plus", "text", required=False, help="a text to add (e.g. cat)"))))
register(Task(name="lens-image-search", title="Image → image search (CLIP Lens)", config=LensImageSearchConfig,
              pipeline=CLIPLensPipeline, method="iter_image_search", models=("clip",), load=_load,
              inputs=(_GALLERY, Input("query_image", "image", help="the image to find the like of"))))
