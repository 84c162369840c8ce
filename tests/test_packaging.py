"""What a user installs: the wheel carries the demo model and the app; both entry points start and check flags."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_carries_the_demo_model_and_the_app(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("clip_creative_studio-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("studio/assets/models/shapes-clip.safetensors", "studio/assets/models/shapes-clip.json",
                   "studio/app.py", "pipelines/styleclip.py"):
        assert needed in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "clip-studio = studio.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_app_py_and_module_entry_point_refuse_a_bad_flag_by_name():
    for cmd, prog in (([sys.executable, "app.py"], "app.py"),
                      ([sys.executable, "-c", "from studio.cli import main; main()"], "clip-studio")):
        res = subprocess.run([*cmd, "--device", "warp9"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert res.returncode != 0
        assert f"{prog}: error:" in res.stderr and "warp9" in res.stderr, res.stderr[-2000:]
