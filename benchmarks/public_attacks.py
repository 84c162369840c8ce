"""What each attack of issue 22 (items 3, 5, 6, 8, 10, 11) costs a public server now: peak resident memory
added and wall time, each attack in a fresh interpreter, against the old code path as the reference where it can
still be run here (the 16-bit decode through float64, json.loads on the settings chunk).

    python benchmarks/public_attacks.py            # prints a table; state the machine's load beside it

The attack files are generated here, small, in a temporary folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import resource, sys, time, json
def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
{setup}
base = rss_mb()
t0 = time.perf_counter()
outcome = None
try:
{attack}
except Exception as err:
    outcome = f"{{type(err).__name__}}: {{str(err)[:90]}}"
print(json.dumps({{"mb": rss_mb() - base, "s": time.perf_counter() - t0, "outcome": str(outcome)[:110]}}))
"""


def probe(setup: str, attack: str, *args: str) -> dict:
    code = PROBE.format(setup=textwrap.dedent(setup), attack=textwrap.indent(textwrap.dedent(attack), "    "))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=900)
    if out.returncode != 0:
        return {"mb": float("nan"), "s": float("nan"), "outcome": out.stderr.strip().splitlines()[-1][:110]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    import numpy as np
    from PIL import Image, PngImagePlugin

    tmp = Path(tempfile.mkdtemp(prefix="public-attacks-"))
    rows = []

    # #5: a 16-bit 39 MP PNG (92 KB) decoded for a preview
    arr = np.zeros((6000, 6500), np.uint16)
    arr[:, :3250] = 40000
    Image.fromarray(arr).save(tmp / "big16.png", compress_level=9)
    del arr
    kb = (tmp / "big16.png").stat().st_size // 1024
    rows.append((f"#5 16-bit 39 MP PNG ({kb} KB): load_image", probe(
        "from studio.images import load_image", "outcome = load_image(sys.argv[1]).size", str(tmp / "big16.png"))))
    rows.append(("   reference: the old float64 path", probe("""
        import numpy as np
        from PIL import Image""", """
        img = Image.open(sys.argv[1]); img.load()
        a = np.asarray(img, dtype=np.float64)
        small = Image.fromarray(np.clip(a / 65535.0 * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
        small.thumbnail((1024, 1024)); outcome = small.size""", str(tmp / "big16.png"))))

    # #10: a PNG whose settings chunk is 200,000 nested [
    info = PngImagePlugin.PngInfo()
    info.add_text("clip-studio", "[" * 200_000)
    Image.new("RGB", (16, 16)).save(tmp / "nested.png", pnginfo=info)
    rows.append(("#10 settings chunk of 200,000 '[': read_png_metadata", probe(
        "from studio.media import read_png_metadata", "outcome = read_png_metadata(sys.argv[1])",
        str(tmp / "nested.png"))))
    rows.append(("   reference: json.loads on the chunk", probe(
        "import json\nfrom PIL import Image", "outcome = json.loads(Image.open(sys.argv[1]).text['clip-studio'])",
        str(tmp / "nested.png"))))

    # #8: a lone surrogate in a prompt
    rows.append(("#8 prompt 'a \\ud800': check_text", probe(
        "from studio.tasks import check_text", "outcome = check_text('a \\ud800', 'prompt')")))

    # #3: a 2048x2048 video's moments (the 8192 px one is past what this machine's x264 encodes quickly)
    from studio.demo.scenes import Appearance, write_shapes_video

    video = write_shapes_video(tmp / "big.mp4", [Appearance("red", "circle", 1.0, 2.0)], 4.0, fps=4,
                               size=(2048, 2048))  # written here: the probe's peak memory is the search's alone
    rows.append(("#3 2048x2048 4 s video, top_k 50: search with clips", probe("""
        from pipelines.lens_video import LensVideoPipeline
        pipe = LensVideoPipeline.from_pretrained("shapes-clip", cache_dir=sys.argv[2])""", """
        r = pipe.search(sys.argv[1], "a red circle", patches=False, top_k=50, threshold=0.0, fps=2)
        outcome = f"{len(r.moments)} moments, {sum(1 for m in r.moments if m.clip)} clips, " \\
                  f"clip size {__import__('imageio_ffmpeg').read_frames(r.moments[0].clip).__next__()['size']}" """,
        str(video), str(tmp / "cache"))))

    rows += server_attacks(tmp)
    print(f"{'attack':58} {'+RSS MB':>8} {'time s':>8}  outcome")
    for name, r in rows:
        print(f"{name:58} {r['mb']:8.0f} {r['s']:8.3f}  {r['outcome']}")
    print(f"load average: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")


def server_attacks(tmp: Path) -> list[tuple[str, dict]]:
    """#6, #11, #12 against a public server in this process (port 0): time of each refusal, this process's peak
    resident memory added (ru_maxrss), what reached the disk and the log."""
    import logging
    import resource
    import time

    import httpx

    from studio import app
    from studio.trust import Policy

    os.environ["GRADIO_TEMP_DIR"] = str(tmp / "gradio")
    logging.basicConfig(level=logging.INFO, filename=tmp / "server.log")
    pol = Policy.from_settings(public=True, environ={}, clip="shapes-clip", max_upload_mb=1, upload_budget_mb=4)
    demo = app.build_app(device="cpu", policy=pol)
    app.queue(demo, pol)
    import socket

    with socket.socket() as sock:  # a free port, never a fixed one
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                            **app.launch_options(pol))
    rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # noqa: E731
    rows = []

    def timed(name, fn):
        base, t0 = rss(), time.perf_counter()
        outcome = fn()
        rows.append((name, {"mb": rss() - base, "s": time.perf_counter() - t0, "outcome": str(outcome)[:110]}))

    def stored() -> int:
        return sum(p.stat().st_size for p in (tmp / "gradio").rglob("*") if p.is_file())

    def many_files():
        r = httpx.post(url + "gradio_api/upload", files=[("files", (f"{i}.png", b"\0" * 1000)) for i in range(1000)])
        return f"HTTP {r.status_code}, {stored()} bytes stored"

    timed("#6 one upload request of 1,000 files", many_files)

    def budget():
        codes = [httpx.post(url + "gradio_api/upload", files={"files": (f"{i}.bin", os.urandom(900_000))}).status_code
                 for i in range(8)]
        return f"HTTP {codes}, {stored() / 1e6:.1f} MB stored (budget 4 MB)"

    timed("#6 eight 0.9 MB uploads against a 4 MB budget", budget)
    log_before = (tmp / "server.log").stat().st_size
    fn_index = next(i for i, f in demo.fns.items() if f.api_name == "sketch_clipdraw")
    inputs = demo.fns[fn_index].inputs
    data = [getattr(b, "value", None) for b in inputs]
    data[next(i for i, b in enumerate(inputs) if getattr(getattr(b, "studio_spec", None), "name", "") == "num_steps")] \
        = 10**9

    def bad_args():
        for _ in range(100):
            job = httpx.post(url + "gradio_api/queue/join", json={
                "data": data, "fn_index": fn_index,
                "session_hash": "bench"})
            assert job.status_code == 200, job.text
            with httpx.stream("GET", url + "gradio_api/queue/data", params={"session_hash": "bench"}) as resp:
                for line in resp.iter_lines():
                    if "process_completed" in line:
                        message = json.loads(line[5:])["output"].get("error")
                        break
        grown = (tmp / "server.log").stat().st_size - log_before
        return f"{grown} log bytes for 100; {message}"

    timed("#11 100 calls with num_steps=1e9", bad_args)
    demo.close()
    return rows


if __name__ == "__main__":
    main()
