"""What the generator modules share below both the network and its loaders, with no torch: the bundled demo
generator's name and the checkpoint errors (`checkpoints` re-exports them; `ada_pickle` raises the mismatch)."""

from __future__ import annotations

from studio.defaults import DEMO_GENERATOR  # noqa: F401 — the bundled demo generator, named in studio/defaults.py


class CheckpointNotFoundError(FileNotFoundError):
    """A named (registry or `hf:`) checkpoint that is neither here nor could be downloaded; the message lists each
    place tried and how to get the file by hand."""

    setup_problem = True  # the page keeps this message on screen until dismissed (issue 16)


class CheckpointMismatchError(ValueError):
    """A state dict that does not match a model's parameter names or shapes (`what`: the model, in words)."""

    setup_problem = True  # the page keeps this message on screen until dismissed

    def __init__(self, missing: list[str], unexpected: list[str], mismatched: list[tuple[str, tuple, tuple]],
                 source: str = "checkpoint", what: str = "the StyleGAN2 generator (rosinality format)"):
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched

        def listing(items: list[str], limit: int = 12) -> str:
            more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
            return ", ".join(items[:limit]) + more

        parts = [f"{source} does not match {what} (strict):"]
        if missing:
            parts.append(f"  missing keys ({len(missing)}): {listing(missing)}")
        if unexpected:
            parts.append(f"  unexpected keys ({len(unexpected)}): {listing(unexpected)}")
        if mismatched:
            parts.append(f"  shape mismatches ({len(mismatched)}): "
                         + listing([f"{k} file {tuple(a)} vs model {tuple(b)}" for k, a, b in mismatched]))
        super().__init__("\n".join(parts))


__all__ = ["DEMO_GENERATOR", "CheckpointMismatchError", "CheckpointNotFoundError"]
