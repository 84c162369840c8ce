"""Time one benchmark script on the current code and on an earlier commit, alternately, in one sitting.

    python benchmarks/before_after.py --ref 5c3b74d --repeat 2 -- benchmarks/sketch.py --threads 2

The script given is the current one; a copy of it runs inside a temporary worktree of `--ref`, so both sides are
timed by the same script (scripts map the run protocol's setting names to older ones where they must). With
`--own-script` each side runs its own version of the script instead (for scripts changed only by renames). Runs
alternate (before, after, before, after, ...) so that a drift in the machine's load falls on both. Each run's
table is printed under its label, with the machine's load average when it started.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref", required=True, help="the earlier commit")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--own-script", action="store_true", help="run the earlier commit's own version of the script "
                   "(for scripts that only speak the new setting names); the default runs the current script on both")
    p.add_argument("script", help="a benchmarks/*.py script")
    p.add_argument("args", nargs=argparse.REMAINDER)
    a = p.parse_args()
    args = [x for x in a.args if x != "--"]
    script = (ROOT / a.script).resolve() if not Path(a.script).is_absolute() else Path(a.script)
    tmp = Path(tempfile.mkdtemp(prefix="studio-before-"))
    old = tmp / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(old), a.ref], check=True)
    try:
        rel = script.relative_to(ROOT)
        copy = old / rel if a.own_script else old / "benchmarks" / f"_current_{script.name}"
        if not a.own_script:
            shutil.copy(script, copy)
        sides = [("before " + a.ref, old, copy), ("after (working tree)", ROOT, script)]
        for i in range(a.repeat):
            for label, tree, path in sides:
                load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
                print(f"\n### {label}, run {i + 1} (load average {load:.1f})", flush=True)
                env = {**os.environ, "PYTHONPATH": str(tree)}
                subprocess.run([sys.executable, str(path), *args], cwd=tree, env=env, check=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
