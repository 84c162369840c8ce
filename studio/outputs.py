"""Where results are written when no folder is named, and how old ones are deleted.

Every output a run writes without an explicit folder (the page's downloads, `Result.save()`) lives under one
root, `STUDIO_OUTPUT_DIR` or `<tempdir>/clip-studio-outputs`, so a public server can delete what is older than
its time to live (`sweep`, run every few minutes by `start_sweeper`) instead of leaving a folder per run forever.
No torch here.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

log = logging.getLogger("studio.outputs")
_SWEEPER: threading.Thread | None = None


def output_root() -> Path:
    root = Path(os.environ.get("STUDIO_OUTPUT_DIR") or Path(tempfile.gettempdir()) / "clip-studio-outputs")
    root.mkdir(parents=True, exist_ok=True)
    return root


def new_folder(task: str) -> Path:
    """A new, empty folder for one result's files."""
    return Path(tempfile.mkdtemp(prefix=f"studio-{task}-", dir=output_root()))


def new_file(suffix: str) -> Path:
    """A new, empty file for one output (a GIF, a PNG) written without a named path."""
    fd, name = tempfile.mkstemp(suffix=suffix, prefix="studio-", dir=output_root())
    os.close(fd)
    return Path(name)


def sweep(max_age_s: float, root: Path | None = None, now: float | None = None) -> int:
    """Delete the outputs under the root last modified more than `max_age_s` ago; returns how many went."""
    root = root or output_root()
    now = time.time() if now is None else now
    removed = 0
    for entry in root.iterdir():
        try:
            if now - entry.lstat().st_mtime <= max_age_s:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed += 1
        except OSError as err:  # in use or already gone: the next sweep tries again
            log.debug("could not delete %s: %s", entry, err)
    return removed


def start_sweeper(max_age_s: float) -> threading.Thread:
    """Sweep every `max_age_s / 4` (at least a minute, at most ten) in a daemon thread, once per process."""
    global _SWEEPER
    if _SWEEPER is not None and _SWEEPER.is_alive():
        return _SWEEPER
    period = min(600.0, max(60.0, max_age_s / 4))

    def loop() -> None:
        while True:
            removed = sweep(max_age_s)
            if removed:
                log.info("deleted %d output(s) older than %g s", removed, max_age_s)
            time.sleep(period)

    _SWEEPER = threading.Thread(target=loop, name="studio-output-sweeper", daemon=True)
    _SWEEPER.start()
    return _SWEEPER
