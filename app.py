"""CLIP Creative Studio: `python app.py [--help]` here, and the Hugging Face Space's entry point.

The command line lives in `studio/cli.py` (installed as the `clip-studio` command; serving the app, `studio/app.py`,
is one of its commands); this file only calls its `main`.
"""

try:  # ZeroGPU Spaces want `spaces` imported before torch; elsewhere it is absent and nothing changes.
    import spaces  # type: ignore  # noqa: F401
except ImportError:
    pass

from studio.app import build_app  # noqa: E402
from studio.cli import main  # noqa: E402

__all__ = ["build_app", "main"]

if __name__ == "__main__":
    main(prog="app.py")
