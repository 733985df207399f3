"""``ganforge report RUN``: one self-contained HTML file about a run, finished or still training.

It reads what the run folder holds, and nothing else: ``run.json`` (the recipe, the machine and
the software, written when training starts) or else the newest checkpoint's recipe;
``metrics.jsonl`` (a partly written last line, from a run still training, is ignored); the
sample grids and the training film (:mod:`ganforge.observe.animate`); the checkpoints. The page shows

- the machine, the software, throughput (real images/s over the run) and the recipe;
- the losses and logged values over steps, and every evaluated metric over steps (static
  plots, embedded as PNG);
- the sample grids over time, and the film when there is one, each with a step slider;
- the checkpoints (step, size, date).

Everything is embedded (base64 images, inline script and style): the file opens offline.
"""
from __future__ import annotations

import html
import json
import statistics
import time
from pathlib import Path
from typing import Any

from ganforge.observe.animate import data_uri, figure_image, film_frames, grid_frames, viewer, write_page
from ganforge.errors import GanforgeError

__all__ = ["read_metrics", "write_report"]


def read_metrics(run: Path) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl``; a last line still being written is left out."""
    path = Path(run) / "metrics.jsonl"
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _recipe_and_record(run: Path) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    record_path = run / "run.json"
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        return record.get("recipe"), record
    for meta in sorted((run / "checkpoints").glob("*/meta.json"), reverse=True):
        try:
            return json.loads(meta.read_text())["recipe"], {}
        except (json.JSONDecodeError, KeyError):
            continue
    return None, {}


def _figure_uri(fig: Any) -> str:
    fig.tight_layout()
    return data_uri(figure_image(fig))


def _curves(rows: list[dict[str, Any]]) -> str:
    from ganforge.observe.plots import _pyplot

    plt = _pyplot()
    skip = {"step", "epoch", "skipped", "images_per_s"}
    train = [r for r in rows if not any(k.startswith("eval/") for k in r)]
    evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
    groups: dict[str, list[str]] = {}
    keys = sorted({k for r in train for k in r if k not in skip})
    if keys:
        groups["losses"] = [k for k in keys if k.startswith("loss_")]
        groups["logged values"] = [k for k in keys if not k.startswith("loss_")]
    for key in sorted({k for r in evals for k in r if k.startswith("eval/")}):
        groups.setdefault("metric " + key.split("/")[1], []).append(key)
    parts = []
    for title, group in groups.items():
        if not group:
            continue
        source = evals if title.startswith("metric") else train
        fig, ax = plt.subplots(figsize=(7, 3.2))
        for key in group[:12]:
            points = [(r["step"], r[key]) for r in source if key in r and isinstance(r[key], (int, float))]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o" if len(points) < 30 else None, label=key.split("/")[-1])
        ax.set(title=title, xlabel="training step")
        ax.legend(fontsize="small", ncol=2)
        parts.append(f'<img alt="{html.escape(title)}" src="{_figure_uri(fig)}">')
        plt.close(fig)
    if evals:
        last = evals[-1]
        cells = "".join(f"<tr><td>{html.escape(k.removeprefix('eval/'))}</td><td>{v:.6g}</td></tr>"
                        for k, v in last.items() if k.startswith("eval/") and isinstance(v, (int, float)))
        parts.append(f"<h3>Last evaluation (step {last['step']})</h3><table>{cells}</table>")
    return "\n".join(parts) or "<p>No values logged yet.</p>"


def _throughput(rows: list[dict[str, Any]]) -> str:
    rates = [r["images_per_s"] for r in rows if isinstance(r.get("images_per_s"), (int, float)) and r["images_per_s"] > 0]
    if not rates:
        return "<p>No throughput logged yet.</p>"
    median = statistics.median(rates)
    last_step = max((r.get("step", 0) for r in rows), default=0)
    return (f"<p>{median:,.0f} real images/s drawn by training, all processes together (median over "
            f"{len(rates)} log windows; range {min(rates):,.0f} to {max(rates):,.0f}). "
            f"Last logged step: {last_step}.</p>")


def _table(record: dict[str, Any]) -> str:
    keys = ("started", "resumed_at_step", "machine", "device", "processes", "precision", "threads", "cuda_graph")
    cells = "".join(f"<tr><th>{k}</th><td>{html.escape(str(record[k]))}</td></tr>" for k in keys if k in record)
    versions = ", ".join(f"{k} {v}" for k, v in record.get("versions", {}).items())
    if versions:
        cells += f"<tr><th>software</th><td>{html.escape(versions)}</td></tr>"
    return f"<table>{cells}</table>" if cells else "<p>No run.json (the run started before ganforge wrote one).</p>"


def _checkpoints(run: Path) -> str:
    rows = []
    for folder in sorted(p for p in (run / "checkpoints").glob("*") if p.is_dir()):
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        done = (folder / "meta.json").is_file()
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(folder.stat().st_mtime))
        rows.append(f"<tr><td>{html.escape(folder.name)}</td><td>{size / 2**20:.1f} MiB</td><td>{when}</td>"
                    f"<td>{'complete' if done else 'incomplete'}</td></tr>")
    if not rows:
        return "<p>No checkpoint yet.</p>"
    return "<table><tr><th>folder</th><th>size</th><th>written</th><th>state</th></tr>" + "".join(rows) + "</table>"


def _listen(run: Path) -> str:
    """The newest examples a system wrote as sound (wavs in the folder beside a sample picture:
    a vocoder's ``NAME.wav`` and ``NAME-real.wav``) as ``<audio>`` players, embedded."""
    import base64

    folders = [p.with_suffix("") for p in run.glob("samples-*.png") if p.with_suffix("").is_dir()]
    folders = [f for f in folders if any(f.glob("*.wav"))]
    if not folders:
        return ""
    folder = max(folders, key=lambda f: (f.name == "samples-final", f.name))

    def player(path: Path) -> str:
        data = base64.b64encode(path.read_bytes()).decode()
        return f'<audio controls preload="metadata" title="{html.escape(path.name)}" src="data:audio/wav;base64,{data}"></audio>'

    rows = []
    for wav in sorted(folder.glob("*.wav")):
        if wav.stem.endswith("-real"):
            continue
        real = wav.with_name(f"{wav.stem}-real.wav")
        rows.append(f"<tr><td>{html.escape(wav.stem)}</td><td>{player(real) if real.is_file() else ''}</td>"
                    f"<td>{player(wav)}</td></tr>")
    return (f"<h2>Listen</h2><p>{html.escape(folder.name)}: the recording and the run's output.</p>"
            "<table><tr><th>example</th><th>real</th><th>generated</th></tr>" + "".join(rows) + "</table>")


def write_report(run: Path, out: Path | None = None) -> Path:
    run = Path(run)
    if not run.is_dir():
        raise GanforgeError(f"{run} is not a run folder (the out_dir of a training run)")
    rows = read_metrics(run)
    recipe, record = _recipe_and_record(run)
    if recipe is None and not rows:
        raise GanforgeError(f"{run} holds no run.json, checkpoint or metrics.jsonl: is it a ganforge run folder?")
    import yaml

    text = yaml.safe_dump(recipe, sort_keys=False, default_flow_style=None, width=100) if recipe else "unknown"
    sections = [
        "<h2>Machine and throughput</h2>", _table(record), _throughput(rows),
        "<h2>Recipe</h2>", f"<details><summary>the full recipe, defaults included</summary><pre>{html.escape(text)}"
        "</pre></details>",
        "<h2>Training curves and metrics</h2>", _curves(rows),
    ]
    grids, film = grid_frames(run), film_frames(run)
    if film:
        sections += ["<h2>Training film</h2>", "<p>D's output over the plane (green: real, purple: fake), real "
                     "and generated points, G's gradient as arrows, G's image of a noise grid.</p>", viewer(film, "film")]
    sections += ["<h2>Samples over training</h2>",
                 viewer(grids, "samples") if grids else "<p>No sample grid yet.</p>", _listen(run),
                 "<h2>Checkpoints</h2>", _checkpoints(run)]
    name = record.get("run") or (recipe or {}).get("name") or run.name
    return write_page(out or run / "report.html", f"ganforge run {name}", "\n".join(sections))
