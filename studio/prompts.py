"""Prompt templates for zero-shot ensembles.

`IMAGENET_TEMPLATES` are the 80 templates CLIP used for ImageNet zero-shot (Radford et al. 2021,
"Prompt_Engineering_for_ImageNet.ipynb"); `CURATED_TEMPLATES` is the short subset of 7 that the same
notebook found to do about as well at a tenth of the cost. `SHAPES_TEMPLATES` suit the bundled demo
CLIP, which was trained on drawings of shapes.
"""

from __future__ import annotations

IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "a photo of a {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.",
    "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.",
    "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
)

# The 7-template subset from CLIP's prompt-engineering notebook.
CURATED_TEMPLATES: tuple[str, ...] = (
    "itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
    "a {} in a video game.", "art of the {}.", "a photo of the small {}.",
)

# Templates matching the captions the demo CLIP was trained on (see studio/demo/shapes.py).
SHAPES_TEMPLATES: tuple[str, ...] = ("{}", "a {}", "a drawing of a {}", "a picture of a {}")

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "none": ("{}",),
    "curated": CURATED_TEMPLATES,
    "imagenet": IMAGENET_TEMPLATES,
    "shapes": SHAPES_TEMPLATES,
}


def get_templates(templates: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Return a template tuple from a set name or an explicit sequence (each must contain `{}`)."""
    if isinstance(templates, str):
        if templates not in TEMPLATE_SETS:
            raise ValueError(f"`templates` must be one of {sorted(TEMPLATE_SETS)} or a list, got {templates!r}")
        return TEMPLATE_SETS[templates]
    out = tuple(templates)
    if not out or any("{}" not in t for t in out):
        raise ValueError(f"`templates` must be non-empty strings each containing '{{}}', got {out!r}")
    return out
