"""The model names the studio starts from, each written once (no torch here: `--help` and the page read them).

DEFAULT_CLIP: the CLIP every task scores with unless told otherwise (`STUDIO_CLIP` overrides it where a spec is
read from the environment). DEMO_CLIP and DEMO_GENERATOR: the bundled demo models (studio/assets/models/), trained
here on synthetic shapes, which work offline and stand in when real weights cannot be had.
"""

DEFAULT_CLIP = "ViT-B-32/openai"  # open_clip's name for OpenAI's ViT-B/32, the CLIP of CLIPDraw and StyleCLIP
DEMO_CLIP = "shapes-clip"  # the bundled demo CLIP (studio/assets/models/shapes-clip.*)
DEMO_GENERATOR = "demo-shapes"  # the bundled demo generator (studio/generators/shapes.py)


class DemoModelWarning(UserWarning):
    """The warning the API gets when the demo model stands in or weights are random (the command line, which
    prints the same text as a log line, ignores it). Here, not in the scorer, so the command line can filter it
    without importing torch."""
