"""Where results are written when no folder is named, and how old ones are deleted.

Every output a run writes without an explicit folder (the page's downloads, `Result.save()`) lives under one
root, `STUDIO_OUTPUT_DIR` or `<tempdir>/clip-studio-outputs`, so a public server can delete what is older than
its time to live (`sweep`, run every few minutes by `start_sweeper`) instead of leaving a folder per run forever.

Gradio's own cache (uploads, and the copies of the files a handler returns) is swept the same way
(`sweep_gradio_cache`): Gradio's `delete_cache` deletes only the files it registered, and in Gradio 6 a handler
whose update changes a component's properties (every run handler's first update is `gr.skip()` for all but its
Stop token) makes a per-session copy of that component whose cached files are never registered, so a streamed
run's downloads stayed forever (issue 22 #4). No torch here.
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


def gradio_cache() -> Path:
    """Gradio's cache folder (`GRADIO_TEMP_DIR`, else `<tempdir>/gradio`): uploads and returned files, one folder
    per content hash."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder())


def _last_touched(entry: Path) -> float:
    """The latest modification time of an entry and, for a folder, of the files directly in it: Gradio touches a
    cached file when it hands it out again, not its folder."""
    newest = entry.lstat().st_mtime
    if entry.is_dir() and not entry.is_symlink():
        with os.scandir(entry) as it:
            for child in it:
                newest = max(newest, child.stat(follow_symlinks=False).st_mtime)
    return newest


def sweep(max_age_s: float, root: Path | None = None, now: float | None = None) -> int:
    """Delete the outputs under the root (each file, or each folder with what it holds) last modified more than
    `max_age_s` ago; returns how many went."""
    root = root or output_root()
    if not root.is_dir():
        return 0
    now = time.time() if now is None else now
    removed = 0
    for entry in root.iterdir():
        try:
            if now - _last_touched(entry) <= max_age_s:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed += 1
        except OSError as err:  # in use or already gone: the next sweep tries again
            log.debug("could not delete %s: %s", entry, err)
    return removed


def sweep_gradio_cache(max_age_s: float, now: float | None = None) -> int:
    """`sweep` over Gradio's cache folder (see the module's docstring)."""
    return sweep(max_age_s, gradio_cache(), now)


def sweep_all(max_age_s: float, now: float | None = None) -> int:
    """Our outputs and Gradio's cache, both older than `max_age_s`: what `start_sweeper` runs."""
    return sweep(max_age_s, now=now) + sweep_gradio_cache(max_age_s, now)


def start_sweeper(max_age_s: float) -> threading.Thread:
    """`sweep_all` every `max_age_s / 4` (at least a minute, at most ten) in a daemon thread, once per process."""
    global _SWEEPER
    if _SWEEPER is not None and _SWEEPER.is_alive():
        return _SWEEPER
    period = min(600.0, max(60.0, max_age_s / 4))

    def loop() -> None:
        while True:
            removed = sweep_all(max_age_s)
            if removed:
                log.info("deleted %d output(s) older than %g s", removed, max_age_s)
            time.sleep(period)

    _SWEEPER = threading.Thread(target=loop, name="studio-output-sweeper", daemon=True)
    _SWEEPER.start()
    return _SWEEPER
