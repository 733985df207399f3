"""Films of training: an animated GIF and a self-contained HTML page with a step slider.

``ganforge animate RUN`` (and ``log.animate: true`` at the end of a run) writes

- for 2-D runs with a recorded film (``log.film_every``, :mod:`ganforge.plugins.film`):
  ``film.gif`` and ``film.html``, GAN Lab's picture: D's output as a heat map over the plane
  (green: "real", purple: "fake"), the real points, G's points, G's gradient -dL_G/dx as
  arrows on some of them, and the image of a noise grid through G (grey mesh);
- for every run: ``samples.gif`` and ``samples.html``, the fixed-noise sample grids over
  training (``samples-*.png``, in step order).

The HTML pages embed their frames (PNG, base64) and a few lines of JavaScript: they open from
disk with no network. Pictures are drawn with matplotlib and written with Pillow (no ffmpeg).
"""
from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path

from PIL import Image

from ganforge.errors import GanforgeError
from ganforge.observe.files import atomic_path, write_text

__all__ = ["animate", "data_uri", "figure_image", "film_frames", "grid_frames", "viewer", "write_gif", "write_page"]

Frame = tuple[str, Image.Image]  # (label, picture)


def film_frames(run: Path) -> list[Frame]:
    """The recorded film of a 2-D run, one picture per frame (empty when there is none)."""
    folder = Path(run) / "film"
    files = sorted(folder.glob("frame-*.safetensors"))
    if not files or not (folder / "meta.json").is_file():
        return []
    import torch
    from safetensors.torch import load_file

    from ganforge.observe.plots import _pyplot

    plt = _pyplot()
    meta = json.loads((folder / "meta.json").read_text())
    real, (x0, x1, y0, y1) = torch.tensor(meta["real"]), meta["bounds"]
    probability = meta.get("score") == "probability"
    frames = []
    for path in files:
        f = load_file(str(path))
        step = int(path.stem.split("-")[1])
        fig, ax = plt.subplots(figsize=(5, 5), dpi=80)
        d = f["d"].numpy()
        lim = max(abs(float(d.min())), abs(float(d.max())), 1e-6)
        ax.imshow(d, origin="lower", extent=(x0, x1, y0, y1), cmap="PiYG", alpha=0.55, aspect="auto",
                  vmin=0 if probability else -lim, vmax=1 if probability else lim)
        m = meta["manifold"]
        if f["manifold"].numel():
            mesh = f["manifold"].reshape(m, m, 2).numpy()
            for line in (*mesh, *mesh.transpose(1, 0, 2)):
                ax.plot(line[:, 0], line[:, 1], color="0.45", lw=0.4)
        ax.scatter(real[:, 0], real[:, 1], s=4, c="#1b7837", label="real")
        ax.scatter(f["fake"][:, 0], f["fake"][:, 1], s=4, c="#762a83", label="generated")
        arrows, at = f["arrows"], f["arrow_at"]
        if arrows.numel():
            scale = 0.08 * max(x1 - x0, y1 - y0) / max(float(arrows.norm(dim=1).max()), 1e-12)
            ax.quiver(at[:, 0], at[:, 1], arrows[:, 0] * scale, arrows[:, 1] * scale, angles="xy",
                      scale_units="xy", scale=1, color="#40004b", width=0.004)
        ax.set(xlim=(x0, x1), ylim=(y0, y1), title=f"{meta['run']}: step {step}")
        ax.legend(loc="upper right", fontsize=7)
        frames.append((f"step {step}", figure_image(fig)))
        plt.close(fig)
    return frames


def grid_frames(run: Path) -> list[Frame]:
    """The fixed-noise sample grids of a run in step order (``samples-final`` last)."""
    found = []
    for path in Path(run).glob("samples-*.png"):
        match = re.fullmatch(r"samples-(\d+)", path.stem)
        if match or path.stem == "samples-final":
            found.append((int(match.group(1)) if match else float("inf"), path))
    return [(f"step {int(k)}" if k != float("inf") else "final", Image.open(p).convert("RGB"))
            for k, p in sorted(found)]


def figure_image(fig) -> Image.Image:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def write_gif(frames: list[Frame], path: Path, ms: int = 200) -> Path:
    """An animated GIF that loops, the last frame held longer."""
    pictures = [p for _, p in frames]
    durations = [ms] * (len(pictures) - 1) + [ms * 5]
    with atomic_path(path) as tmp:  # a full disk leaves the previous GIF, not a cut-off one
        pictures[0].save(tmp, save_all=True, append_images=pictures[1:], duration=durations, loop=0)
    return path


def data_uri(picture: Image.Image) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def viewer(frames: list[Frame], key: str) -> str:
    """HTML for one picture with a step slider and a play button (frames embedded)."""
    uris = json.dumps([data_uri(p) for _, p in frames])
    labels = json.dumps([label for label, _ in frames])
    last = len(frames) - 1
    return f"""<div class="viewer" id="{key}">
<img id="{key}-img" alt="{key}" src="{data_uri(frames[-1][1])}">
<div><button id="{key}-play" type="button">play</button>
<input id="{key}-slider" type="range" min="0" max="{last}" value="{last}" step="1">
<span id="{key}-label">{html.escape(frames[-1][0])}</span></div>
<script>(function () {{
  const frames = {uris}, labels = {labels};
  const img = document.getElementById("{key}-img"), slider = document.getElementById("{key}-slider");
  const label = document.getElementById("{key}-label"), play = document.getElementById("{key}-play");
  let timer = null;
  function show(i) {{ slider.value = i; img.src = frames[i]; label.textContent = labels[i]; img.dataset.frame = i; }}
  slider.addEventListener("input", () => show(Number(slider.value)));
  play.addEventListener("click", () => {{
    if (timer) {{ clearInterval(timer); timer = null; play.textContent = "play"; return; }}
    play.textContent = "pause";
    timer = setInterval(() => show((Number(slider.value) + 1) % frames.length), 200);
  }});
  show({last});
}})();</script>
</div>"""


STYLE = ("body{font-family:sans-serif;margin:2em;max-width:70em} img{max-width:100%;image-rendering:pixelated}"
         " .viewer input{width:60%} table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:2px 8px;"
         "text-align:left} pre{background:#f4f4f4;padding:1em;overflow:auto}")


def write_page(path: Path, title: str, body: str) -> Path:
    return write_text(path, f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
                    f"<style>{STYLE}</style></head>\n<body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")


def animate(run: Path) -> list[Path]:
    """Write the run's film (when it has one) and its sample grids as GIF + HTML; their paths."""
    run = Path(run)
    if not run.is_dir():
        raise GanforgeError(f"{run} is not a run folder")
    written, single = [], None
    for stem, frames in (("film", film_frames(run)), ("samples", grid_frames(run))):
        if stem == "samples" and len(frames) == 1:  # one grid is a picture, not a film
            single = frames[0][0]
            continue
        if frames and (stem == "film" or frames[0][1].size == frames[-1][1].size):
            written.append(write_gif(frames, run / f"{stem}.gif"))
            title = f"{run.name}: {'training film' if stem == 'film' else 'samples over training'}"
            written.append(write_page(run / f"{stem}.html", title, viewer(frames, stem)))
    if not written and single is not None:
        raise GanforgeError(f"{run} has one sample grid ({single}), and an animation needs two or more: "
                            f"train with log.sample_every=N to keep a grid every N steps")
    if not written:
        raise GanforgeError(f"{run} has nothing to animate yet: no film frames (log.film_every) and no "
                            f"sample grids (samples-*.png)")
    return written
