"""Seeing training (issue #17): the 2-D film's recorded values, GIFs, latent walks, the run
report, and the pages in a real headless browser (Debian's Chromium, driven by Playwright)."""
import json
import math
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from ganforge.contract.recipes import load_recipe
from ganforge.training.engine import train

TOY = ["train.steps=40", "log.every=10", "log.film_every=20", "log.sample_every=20", "log.eval_every=0",
       "log.progress=false", "log.checkpoint_minutes=0", "data.args.n=512", "generator.args.hidden=[32,32]",
       "discriminator.args.hidden=[32,32]", "metrics=[]", "log.animate=false", "train.threads=1"]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("film") / "run"
    state = train(load_recipe("toy_grid", [f"out_dir={out}", *TOY]))
    return out, state


def test_frames_hold_d_and_g_real_values(toy_run):
    """The heat map is D's output at those points, the arrows -dL_G/dx of each fake alone."""
    from ganforge.plugins.film import GRID

    out, state = toy_run
    frames = sorted((out / "film").glob("frame-*.safetensors"))
    assert [f.stem for f in frames] == ["frame-00000000", "frame-00000020", "frame-00000040"]
    last = load_file(str(frames[-1]))  # recorded at step 40: the networks as training left them
    meta = json.loads((out / "film" / "meta.json").read_text())
    G, D, loss = state.nets["G"], state.nets["D"], state.system.loss
    G.eval(), D.eval()
    x0, x1, y0, y1 = meta["bounds"]
    for i, j in ((0, 0), (5, 40), (63, 63), (31, 12)):  # heat map row i (y), column j (x)
        point = torch.tensor([[x0 + (x1 - x0) * j / (GRID - 1), y0 + (y1 - y0) * i / (GRID - 1)]])
        with torch.no_grad():
            direct = loss.score(D(point).float()).item()
        assert last["d"][i, j].item() == pytest.approx(direct, rel=1e-5, abs=1e-6)
    for k in (0, 7, 63):
        x = last["arrow_at"][k:k + 1].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss.g_loss(D(x).flatten()), x)  # one sample: no batch mean
        assert torch.allclose(last["arrows"][k], -grad[0], rtol=1e-4, atol=1e-7)
        with torch.no_grad():  # a small move along the arrow lowers G's loss
            step = 1e-3 * last["arrows"][k] / last["arrows"][k].norm()
            assert loss.g_loss(D(x.detach() + step).flatten()) < loss.g_loss(D(x.detach()).flatten())
    assert last["fake"].shape == (512, 2) and last["manifold"].shape == (21 * 21, 2)
    assert len(meta["real"]) == 512


def test_a_film_does_not_change_training(toy_run, tmp_path):
    out, state = toy_run
    plain = train(load_recipe("toy_grid", [f"out_dir={tmp_path / 'plain'}", *TOY, "log.film_every=0"]))
    assert not (tmp_path / "plain" / "film").exists()
    for name in ("G", "D"):
        for a, b in zip(state.nets[name].state_dict().values(), plain.nets[name].state_dict().values(), strict=True):
            assert torch.equal(a, b)


def test_animate_writes_gifs_with_one_frame_per_recording(toy_run, tmp_path, run_cli):
    out, _ = toy_run
    run = tmp_path / "copy"
    shutil.copytree(out, run)
    code, text, err = run_cli("animate", run)
    assert code == 0, err
    film, samples = Image.open(run / "film.gif"), Image.open(run / "samples.gif")
    assert film.n_frames == 3 and film.size == (400, 400)
    grids = sorted(run.glob("samples-*.png"))
    assert samples.n_frames == len(grids) == 2 and samples.size == Image.open(grids[0]).size
    # issue #35: an image run with one grid wrote a 1-frame samples.gif without a word
    single = tmp_path / "single"
    single.mkdir()
    shutil.copy(grids[-1], single / "samples-final.png")
    code, _, err = run_cli("animate", single)
    assert code == 2 and "has one sample grid (final), and an animation needs two or more" in err
    assert err.count("\n") == 1 and not (single / "samples.gif").exists()
    film.seek(2)
    assert len(film.convert("RGB").getcolors(1 << 16) or []) > 20  # a picture, not a blank frame
    assert "film.html" in text and (run / "samples.html").is_file()
    code, _, err = run_cli("animate", tmp_path / "nothing")
    assert code == 2 and "not a run folder" in err


def test_film_on_image_data_warns_and_records_nothing(tmp_path, mnist_dir):
    over = ["train.steps=2", "log.every=1", "log.film_every=1", "log.progress=false", f"data.root={mnist_dir}",
            "generator.args.ngf=8", "discriminator.args.ndf=8", f"out_dir={tmp_path / 'r'}"]
    with pytest.warns(UserWarning, match="unconditional 2-D runs.*shape \\(1, 28, 28\\)"):
        train(load_recipe("mnist_dcgan", over))
    assert not (tmp_path / "r" / "film").exists()


def test_slerp_and_latent_walks():
    from ganforge.observe.walks import latent_walks, slerp

    a, b = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    path = slerp(a, b, torch.linspace(0, 1, 5))[0]
    assert torch.allclose(path[0], a[0]) and torch.allclose(path[-1], b[0], atol=1e-6)
    assert torch.allclose(path.norm(dim=1), torch.full((5,), 3.0))  # on the circle, not the chord
    same = slerp(a, a, torch.linspace(0, 1, 3))[0]
    assert torch.allclose(same, a.expand(3, -1))

    def noise(n, device, generator):
        return torch.randn(n, 4, generator=generator), torch.randint(0, 3, (n,), generator=generator)

    conditional = SimpleNamespace(noise=noise, num_classes=3)
    (z, y), k = latent_walks(conditional, 2, 5, torch.Generator().manual_seed(0))
    assert k == 5 and z.shape == (2 * 3 * 5, 4)
    rows, labels = z.view(6, 5, 4), y.view(6, 5)
    assert torch.equal(rows[0], rows[1]) and torch.equal(rows[0], rows[2]) and not torch.equal(rows[0], rows[3])
    assert labels[:, 0].tolist() == [0, 1, 2, 0, 1, 2] and (labels == labels[:, :1]).all()


def test_sample_interpolate_from_the_cli(toy_run, tmp_path, run_cli, mnist_dir):
    out, _ = toy_run
    code, text, err = run_cli("sample", out, "--interpolate", "6", "--n", "3", "--out", tmp_path / "w.png")
    assert code == 0 and "wrote 18 samples" in text, err
    code, _, err = run_cli("sample", out, "--interpolate", "6", "--out", tmp_path / "w.npz")
    assert code == 2 and "FILE.png" in err
    code, _, err = run_cli("sample", out, "--interpolate", "1", "--out", tmp_path / "w.png")
    assert code == 2 and "at least 2" in err


def test_report_of_a_run_still_training(toy_run, tmp_path, run_cli):
    """Only what exists: no checkpoint, no run.json, a half-written last metrics line."""
    from ganforge.observe.report import read_metrics

    out, _ = toy_run
    run = tmp_path / "live"
    shutil.copytree(out, run)
    shutil.rmtree(run / "checkpoints")
    (run / "run.json").unlink()
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 50, "loss_d": 0.')
    assert read_metrics(run)[-1]["step"] == 40
    code, text, err = run_cli("report", run)
    assert code == 0, err
    page = (run / "report.html").read_text()
    assert "No checkpoint yet" in page and "Training film" in page and "images/s" in page
    code, _, err = run_cli("report", tmp_path / "empty")
    assert code == 2 and "not a run folder" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli("report", tmp_path / "empty")
    assert code == 2 and "no run.json" in err


def test_report_names_the_machine_and_checkpoints(toy_run):
    from ganforge.observe.report import write_report

    out, _ = toy_run
    record = json.loads((out / "run.json").read_text())
    assert record["recipe"]["name"] == "toy_grid" and record["processes"] == 1 and record["machine"]
    page = write_report(out, out.parent / "r.html").read_text()
    assert record["machine"] in page and "step-00000040" in page and "<h2>Recipe</h2>" in page
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page


# ------------------------------------------------------------------ in a real browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
browser = pytest.mark.skipif(
    not CHROMIUM and not os.environ.get("GANFORGE_REQUIRE_BROWSER"),
    reason="needs Chromium (Debian: apt-get install chromium); .ci/run installs it and sets GANFORGE_REQUIRE_BROWSER")


def open_offline(path: Path, check):
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "GANFORGE_REQUIRE_BROWSER is set but no chromium is on PATH"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            context = b.new_context(offline=True)
            page = context.new_page()
            errors, remote = [], []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: remote.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
            page.goto(path.as_uri())
            page.wait_for_load_state("load")
            result = check(page)
            assert errors == [] and remote == []
            return result
        finally:
            b.close()


def _slide(page, key):
    img, slider, label = page.locator(f"#{key}-img"), page.locator(f"#{key}-slider"), page.locator(f"#{key}-label")
    last = int(slider.get_attribute("max"))
    end_src, end_label = img.get_attribute("src"), label.text_content()
    slider.fill("0")
    assert img.get_attribute("data-frame") == "0" and img.get_attribute("src") != end_src
    assert label.text_content() != end_label
    page.locator(f"#{key}-play").click()  # playing advances the frame
    page.wait_for_function(f"document.getElementById('{key}-img').dataset.frame !== '0'", timeout=5000)
    page.locator(f"#{key}-play").click()
    return last


def _not_blank(png: bytes, tmp: Path) -> None:
    (tmp / "shot.png").write_bytes(png)
    picture = Image.open(tmp / "shot.png").convert("L")
    hist = picture.histogram()
    assert max(hist) < 0.97 * sum(hist)  # more than one flat colour
    mean = sum(i * h for i, h in enumerate(hist)) / sum(hist)
    assert math.sqrt(sum(h * (i - mean) ** 2 for i, h in enumerate(hist)) / sum(hist)) > 5


@browser
def test_film_page_and_report_in_headless_chromium(toy_run, tmp_path):
    from ganforge.observe.animate import animate
    from ganforge.observe.report import write_report

    out, _ = toy_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    animate(run)

    def film(page):
        assert _slide(page, "film") == 2
        page.locator("#film-slider").fill("0")
        assert page.locator("#film-label").text_content() == "step 0"
        _not_blank(page.screenshot(), tmp_path)

    open_offline(run / "film.html", film)

    def report(page):
        assert _slide(page, "film") == 2 and _slide(page, "samples") == 1
        assert page.locator("img").count() >= 4  # curves, film, samples
        _not_blank(page.screenshot(full_page=True), tmp_path)

    open_offline(write_report(run), report)


def test_film_skips_conditional_runs_with_a_warning(tmp_path):
    over = [f"out_dir={tmp_path / 'c'}", *TOY, "objective=conditional"]
    with pytest.warns(UserWarning, match="more than a noise vector"):
        train(load_recipe("toy_grid", over))
    assert not (tmp_path / "c" / "film").exists()
