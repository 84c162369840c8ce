"""CLIP Lens: zero-shot labels, text search over images, and image − text + text arithmetic.

Zero-shot classification with prompt ensembles follows Radford et al. 2021 (§3.1.4); the arithmetic
query (an image's embedding minus one text plus another) is the classic "dog − 'dog' + 'cat'" probe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from studio.images import to_tensor
from studio.scorer import CLIPScorer, get_scorer

MAX_LABELS = 200
MAX_GALLERY = 64


@dataclass
class LensLabels:
    """Labels sorted by probability (highest first)."""

    labels: list[str]
    probs: list[float]
    templates: str
    notice: str | None = None


@dataclass
class LensRanking:
    """Gallery images sorted by similarity to a query (highest first)."""

    order: list[int]  # indices into the input gallery
    scores: list[float]  # cosine similarity × 100, in `order`
    query: str
    notice: str | None = None
    extra: dict = field(default_factory=dict)


def parse_labels(text: str | Sequence[str]) -> list[str]:
    """Labels from comma- or newline-separated text (or a list), stripped, de-duplicated, order kept."""
    items = re.split(r"[,\n]", text) if isinstance(text, str) else list(text)
    labels = list(dict.fromkeys(s.strip() for s in items if isinstance(s, str) and s.strip()))
    if not labels:
        raise ValueError(f"`labels` must name at least one label (comma or newline separated), got {text!r}")
    if len(labels) > MAX_LABELS:
        raise ValueError(f"`labels` may hold at most {MAX_LABELS} labels, got {len(labels)}")
    return labels


class CLIPLensPipeline:
    """Zero-shot labels, search and embedding arithmetic on the shared scorer."""

    def __init__(self, scorer: CLIPScorer):
        self.scorer = scorer

    @classmethod
    def from_pretrained(cls, spec: str | None = None, device: str | None = None) -> "CLIPLensPipeline":
        return cls(get_scorer(spec, device=device))

    def _embed_images(self, images: Sequence[Any], name: str) -> torch.Tensor:
        if images is None or len(images) == 0:
            raise ValueError(f"`{name}` must hold at least one image, got none")
        if len(images) > MAX_GALLERY:
            raise ValueError(f"`{name}` may hold at most {MAX_GALLERY} images, got {len(images)}")
        with torch.no_grad():
            return torch.cat([self.scorer.encode_image(to_tensor(im, f"{name}[{i}]")) for i, im in enumerate(images)])

    def classify(self, image: Any, labels: str | Sequence[str], templates: str = "auto") -> LensLabels:
        """Zero-shot probabilities of `labels` for `image`, with a prompt-template ensemble."""
        # 1. check inputs
        names = parse_labels(labels)
        x = to_tensor(image, "image")
        if templates == "auto":  # the demo model was trained on its own caption style
            templates = "shapes" if self.scorer.is_demo else "curated"
        # 2. score
        probs = self.scorer.rank(x, names, templates)[0].tolist()
        # 3. package, highest first
        order = sorted(range(len(names)), key=lambda i: -probs[i])
        return LensLabels([names[i] for i in order], [probs[i] for i in order], templates, self.scorer.notice)

    def search(self, images: Sequence[Any], query: str) -> LensRanking:
        """Rank `images` by similarity to a text `query`."""
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"`query` must be non-empty text, got {query!r}")
        emb = self._embed_images(images, "images")
        sims = (emb @ self.scorer.encode_text([query.strip()]).t())[:, 0]
        return self._ranking(sims, query.strip())

    def arithmetic(self, images: Sequence[Any], query_image: Any, minus: str = "", plus: str = "",
                   weight: float = 1.0) -> LensRanking:
        """Rank `images` against normalise(e(query_image) − w·e(minus) + w·e(plus)) (e.g. dog − "dog" + "cat")."""
        # 1. check inputs
        if not 0.0 <= weight <= 5.0:
            raise ValueError(f"`weight` must be in [0, 5], got {weight}")
        minus, plus = (minus or "").strip(), (plus or "").strip()
        if not minus and not plus:
            raise ValueError("`minus` and `plus` are both empty: give at least one text to subtract or add")
        # 2. build the query
        with torch.no_grad():
            q = self.scorer.encode_image(to_tensor(query_image, "query_image"))[0]
            if minus:
                q = q - weight * self.scorer.encode_text([minus])[0]
            if plus:
                q = q + weight * self.scorer.encode_text([plus])[0]
            q = F.normalize(q, dim=-1)
        # 3. rank the gallery
        emb = self._embed_images(images, "images")
        label = "image" + (f" − “{minus}”" if minus else "") + (f" + “{plus}”" if plus else "")
        return self._ranking(emb @ q, label)

    def _ranking(self, sims: torch.Tensor, query: str) -> LensRanking:
        order = torch.argsort(sims, descending=True).tolist()
        return LensRanking(order, [100.0 * float(sims[i]) for i in order], query, self.scorer.notice)
