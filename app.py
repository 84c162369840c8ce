"""CLIP Creative Studio: `python app.py [--help]` here, and the Hugging Face Space's entry point.

The app lives in `studio/app.py` (installed as the `clip-studio` command); this file only starts it.
"""

try:  # ZeroGPU Spaces want `spaces` imported before torch; elsewhere it is absent and nothing changes.
    import spaces  # type: ignore  # noqa: F401
except ImportError:
    pass

from studio.app import build_app, main  # noqa: E402

__all__ = ["build_app", "main"]

if __name__ == "__main__":
    main(prog="app.py")
