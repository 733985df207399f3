"""The ``hifigan`` vocoder system on the engine: its losses, the discriminator warm-up, bitwise
resume, 2-process DDP, the examples it writes, ``ganforge sample`` and ``ganforge vocode``.
The clips are generated (tests/audio_helpers.py); nothing needs espeak-ng."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ganforge.contract.recipes import load_recipe
from ganforge.training.engine import train
from ganforge.contract.manager import PluginManager

from audio_helpers import RATE, TINY, make_clips, voiced
from test_reliability import _InterruptAt


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    return make_clips(tmp_path_factory.mktemp("speech"), n=8, seconds=0.5, lists=True)


def _recipe(out, speech, steps, *extra):
    return load_recipe("speech_hifigan", [f"out_dir={out}", f"data.root={speech}", f"train.steps={steps}",
                                          "log.checkpoint_every=3", "phases={}", *TINY, *extra])


NETS = {"G": "G: {name: hifigan_generator, args: {version: v3, channels: 16}}",
        "MPD": "MPD: {name: hifigan_mpd, args: {width: 0.01, periods: [2, 3]}}",
        "MSD": "MSD: {name: hifigan_msd, args: {width: 0.01, scales: 2}}"}


def _families(*names):
    """Overrides for a vocoder with only these discriminator families."""
    return [f"objective.args={{discriminators: [{', '.join(names)}]}}",
            "networks={" + ", ".join(NETS[n] for n in ("G", *names)) + "}"]


@pytest.mark.parametrize("families", [("MPD", "MSD"), ("MPD",), ("MSD",)])
def test_the_generators_loss_is_hifigans_on_a_batch(speech, tmp_path, families):
    """45 x mel-L1 (loss mels to Nyquist) + sum over sub-discriminators of (1 - D(G(s)))^2 and
    2 x the L1 between their features, HiFi-GAN's train.py by hand, on the system's networks;
    with both discriminator families (the paper's) or one."""
    state = train(_recipe(tmp_path, speech, 1, *_families(*families)))
    system = state.system
    assert set(state.nets) == {"G", *families}
    y = state.dataset.__getitems__([0, 5, 9, 11])
    with torch.no_grad():
        terms = system.g_loss(y)
        fake = system.nets["G"](system.mel(y))
        mel_loss = 45 * torch.nn.functional.l1_loss(system.loss_mel(fake), system.loss_mel(y))
        adv = fm = 0.0
        for name in families:
            real, out = system.nets[name](y), system.nets[name](fake)
            adv += sum(torch.mean((1 - g) ** 2) for g in out.logits)
            fm += 2 * sum(torch.mean(torch.abs(r - g)) for rs, gs in zip(real.features, out.features)
                          for r, g in zip(rs, gs))
    assert terms.loss.item() == pytest.approx((mel_loss + adv + fm).item(), rel=1e-5)
    assert system.mel.config.fmax == 8000 and system.loss_mel.config.fmax is None


def test_before_the_discriminator_starts_g_learns_from_the_mel_loss_alone(speech, tmp_path):
    state = train(_recipe(tmp_path, speech, 4, "phases={D: {start: 2}}", "log.every=1"))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    by_step = {r["step"]: r for r in rows if "loss_g" in r}
    assert "g_mel_l1" in by_step[1] and "g_gan_mpd" not in by_step[1] and "loss_d" not in by_step[1]
    assert "g_gan_mpd" in by_step[4] and "g_feat_msd" in by_step[4] and "loss_d" in by_step[4]
    assert state.step == 4


def test_a_vocoder_with_the_period_discriminator_alone_trains_and_saves_only_it(speech, tmp_path):
    train(_recipe(tmp_path, speech, 4, "phases={D: {start: 2}}", "log.every=1", *_families("MPD")))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if r.get("step") == 4 and "loss_g" in r][0]
    assert "g_gan_mpd" in last and "loss_d" in last and not any(k.endswith("_msd") for k in last)
    saved = {p.stem for p in (tmp_path / "checkpoints" / "step-00000004").iterdir()}
    assert "model.MPD" in saved and "model.G" in saved and "model.MSD" not in saved, saved


@pytest.mark.parametrize("families", ["[MPD, MRD]", "[MPD, MPD]", "[]"])
def test_unknown_or_repeated_discriminator_families_are_one_line(speech, tmp_path, run_cli, families):
    code, out, err = run_cli("train", "speech_hifigan", f"out_dir={tmp_path}", f"data.root={speech}", *TINY,
                             f"objective.args={{discriminators: {families}}}")
    assert code != 0 and "discriminators is a list of MPD and MSD" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "checkpoints").exists()


def test_a_vocoder_run_resumes_bitwise_across_the_discriminators_start(speech, tmp_path):
    whole = train(_recipe(tmp_path / "whole", speech, 6, "phases={D: {start: 2}}",
                          "optim.schedule={type: exponential, gamma: 0.9}"))
    assert whole.step == 6
    pm = PluginManager()
    pm.register(_InterruptAt(3), name="interrupt")
    assert train(_recipe(tmp_path / "split", speech, 6, "phases={D: {start: 2}}",
                         "optim.schedule={type: exponential, gamma: 0.9}"), plugins=pm).step == 3
    train(_recipe(tmp_path / "split", speech, 6, "phases={D: {start: 2}}",
                  "optim.schedule={type: exponential, gamma: 0.9}", "resume=auto"))
    for name in ("model.G", "model.MPD", "model.MSD", "optim.G", "optim.D"):
        a = load_file(str(next((tmp_path / "whole" / "checkpoints" / "step-00000006").glob(f"{name}*.safetensors"))))
        b = load_file(str(next((tmp_path / "split" / "checkpoints" / "step-00000006").glob(f"{name}*.safetensors"))))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_training_writes_spectrograms_and_wavs_and_sample_writes_the_held_out_utterances(speech, tmp_path, run_cli,
                                                                                          capsys):
    import soundfile

    train(_recipe(tmp_path / "run", speech, 2, "log.sample_every=1", "metrics=[vocoder]", "log.eval_every=2",
                  "log.eval_samples=4"))
    run = tmp_path / "run"
    assert f"samples: {run / 'samples-final.png'}" in capsys.readouterr().out  # not "sample grid"
    assert (run / "samples-00000001.png").is_file() and (run / "samples-final.png").is_file()
    wavs = sorted(p.name for p in (run / "samples-final").iterdir())
    assert wavs == ["clip_04-real.wav", "clip_04.wav", "clip_05-real.wav", "clip_05.wav",
                    "clip_06-real.wav", "clip_06.wav", "clip_07-real.wav", "clip_07.wav"]
    info = soundfile.info(str(run / "samples-final" / "clip_06.wav"))
    assert (info.samplerate, info.channels, info.frames) == (RATE, 1, int(0.5 * RATE) // 256 * 256)
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    for group in ("held_out", "unseen"):
        for key in ("mel_l1", "mrstft", "pesq", "stoi", "gl_mel_l1", "gl_stoi"):
            assert np.isfinite(row[f"eval/vocoder/{group}/{key}"]), (group, key)
    code, out, _ = run_cli("sample", run, "--n", "2", "--out", tmp_path / "s" / "held.png")
    assert code == 0 and (tmp_path / "s" / "held.png").is_file()
    assert sorted(p.name for p in (tmp_path / "s" / "held").iterdir()) == [
        "clip_04-real.wav", "clip_04.wav", "clip_05-real.wav", "clip_05.wav"]
    # the written wav is G's output for the utterance (16-bit)
    from ganforge.run.trained import load_run

    loaded = load_run(run)
    held = loaded.system.noise(2)
    with torch.no_grad():
        expected = loaded.system.generate(loaded.nets, held)[1, 0, :int(held.lengths[1]) // 256 * 256]
    written, _ = soundfile.read(str(tmp_path / "s" / "held" / "clip_05.wav"), dtype="float32")
    assert np.abs(written - expected.clamp(-1, 1).numpy()).max() <= 1 / 32767


def test_vocode_keeps_names_rates_and_lengths_and_reports_the_real_time_factor(speech, tmp_path, run_cli):
    import soundfile

    train(_recipe(tmp_path / "run", speech, 1))
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    soundfile.write(str(inputs / "a.wav"), voiced(0.3, 140, 1), RATE)
    soundfile.write(str(inputs / "sub" / "b.flac"), voiced(0.4, 160, 2, rate=16000), 16000)
    (inputs / "notes.txt").write_text("not audio, not read")
    code, out, _ = run_cli("vocode", tmp_path / "run", "--input", inputs, "--out", tmp_path / "out")
    assert code == 0 and "vocoded 2 files" in out and "real-time factor" in out
    a, b = soundfile.info(str(tmp_path / "out" / "a.wav")), soundfile.info(str(tmp_path / "out" / "sub" / "b.wav"))
    assert (a.samplerate, a.frames) == (RATE, int(0.3 * RATE))
    assert (b.samplerate, b.frames) == (RATE, int(0.4 * RATE))  # resampled to the run's rate
    code, out, _ = run_cli("vocode", tmp_path / "run", "--input", inputs / "a.wav", "--out", tmp_path / "one")
    assert code == 0 and np.array_equal(soundfile.read(str(tmp_path / "one" / "a.wav"))[0],
                                        soundfile.read(str(tmp_path / "out" / "a.wav"))[0])
    from ganforge.run.trained import load_run

    run = load_run(tmp_path / "run")  # the Python API gives the same samples
    mine = run.vocode(torch.from_numpy(soundfile.read(str(inputs / "a.wav"), dtype="float32")[0]))
    assert np.abs(mine.clamp(-1, 1).numpy() - soundfile.read(str(tmp_path / "out" / "a.wav"))[0]).max() <= 1 / 32767
    code, out, _ = run_cli("vocode", tmp_path / "run", "--out", tmp_path / "held")
    assert code == 0 and sorted(p.name for p in (tmp_path / "held").iterdir()) == [
        "clip_04.wav", "clip_05.wav", "clip_06.wav", "clip_07.wav"]


@pytest.mark.parametrize("case, message", [
    ("junk", "junk.wav is not an audio file soundfile can read"),
    ("zero_frames", "silent.wav holds no samples (a valid header, 0 frames)"),
    ("empty", "no audio files"),
    ("missing", "does not exist; give a wav file or a folder of them"),
    ("threads", "--threads must be at least 1, got 0"),
    ("out", "cannot write to --out"),
    ("image_run", "ganforge vocode needs a vocoder run (objective hifigan); this run's objective is 'unconditional'"),
])
def test_vocode_bad_inputs_are_one_line(speech, tmp_path, run_cli, case, message):
    if case == "image_run":
        train(load_recipe("toy_grid", [f"out_dir={tmp_path / 'run'}", "train.steps=1", "log.progress=false",
                                       "metrics=[]", "log.sample_every=0", "log.film_every=0", "log.animate=false"]))
    else:
        train(_recipe(tmp_path / "run", speech, 1))
    folder = tmp_path / "in"
    folder.mkdir()
    if case == "junk":
        (folder / "junk.wav").write_bytes(b"RIFF but not really")
    if case == "zero_frames":
        import numpy as np
        import soundfile

        soundfile.write(str(folder / "silent.wav"), np.zeros(0, np.float32), 22050)
    (tmp_path / "a_file").write_text("")
    extra = ["--threads", "0"] if case == "threads" else []
    code, out, err = run_cli("vocode", tmp_path / "run", "--input", folder / "x" if case == "missing" else folder,
                             "--out", tmp_path / "a_file" / "out" if case == "out" else tmp_path / "out", *extra)
    assert code != 0 and message in err and len(err.strip().splitlines()) == 1, err


SCRIPT = textwrap.dedent("""
    import sys, torch
    from safetensors.torch import save_file
    from ganforge import load_recipe
    from ganforge.training.engine import train
    sys.path.insert(0, sys.argv[1])
    from audio_helpers import TINY
    seen = []
    from ganforge.plugins.audio import data
    fetch = data.AudioSegments.__getitems__
    def recording(self, indices):
        seen.append(torch.as_tensor(indices))
        return fetch(self, indices)
    data.AudioSegments.__getitems__ = recording
    state = train(load_recipe("speech_hifigan", [*sys.argv[2:], *TINY]))
    out = {f"{n}.{k}": v for n, m in state.nets.items() for k, v in state.accelerator.unwrap_model(m).state_dict().items()}
    out["seen"] = seen[0]
    save_file({k: v.contiguous() for k, v in out.items()}, f"{state.output_dir}/rank{state.accelerator.process_index}.safetensors")
""")


@pytest.mark.slow
def test_two_processes_train_one_vocoder_on_different_segments(speech, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, ACCELERATE_USE_CPU="1", WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), os.path.dirname(__file__), f"out_dir={out}", f"data.root={speech}",
                           "train.steps=3", "phases={D: {start: 1}}", "log.checkpoint_every=3"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = load_file(str(out / "rank0.safetensors")), load_file(str(out / "rank1.safetensors"))
    assert not set(r0.pop("seen").tolist()) & set(r1.pop("seen").tolist())  # each rank its own share
    assert r0.keys() == r1.keys() and any(k.startswith("MSD.") for k in r0)
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key
    # and one process resumes the 2-process checkpoint
    state = train(load_recipe("speech_hifigan", [f"out_dir={out}", f"data.root={speech}", "train.steps=4",
                                                 "phases={D: {start: 1}}", "resume=auto", *TINY]))
    assert state.step == 4


def test_the_report_shows_spectrograms_and_plays_the_examples_in_a_browser(speech, tmp_path):
    """The vocoder's pictures go through the samples viewer; its wavs become <audio> players
    (embedded: the page stays offline) that Chromium decodes to the clips' length."""
    from ganforge.observe.report import write_report

    from test_film import CHROMIUM, open_offline

    train(_recipe(tmp_path / "run", speech, 2, "log.sample_every=1"))
    page_path = write_report(tmp_path / "run")
    text = page_path.read_text()
    assert text.count("<audio") == 8 and "samples-final: the recording and the run's output" in text
    if not CHROMIUM and not os.environ.get("GANFORGE_REQUIRE_BROWSER"):
        pytest.skip("the browser half needs Chromium; .ci/run installs it and sets GANFORGE_REQUIRE_BROWSER")

    def check(page):
        assert page.locator("#samples-img").count() == 1
        page.wait_for_function("Array.from(document.querySelectorAll('audio')).every(a => a.readyState >= 1)",
                               timeout=10000)
        return page.evaluate("Array.from(document.querySelectorAll('audio')).map(a => a.duration)")

    durations = open_offline(page_path, check)
    assert len(durations) == 8 and all(abs(d - 0.5) < 0.02 for d in durations), durations


def _speech_block_commands():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = text[text.index("## Speech: a HiFi-GAN vocoder"):]
    block = block[:block.index("\n## ")]
    code = block[block.index("```bash") + 7:]
    code = code[:code.index("```")]
    return [line.split("#")[0].strip() for line in code.strip().splitlines()]


@pytest.mark.slow
def test_the_readmes_speech_commands_run_as_written(speech, tmp_path):
    """Each line of README's speech block, in a fresh folder: the CPU recipe builds the espeak-ng
    corpus and trains (shortened by overrides appended to the line), vocode reads the held-out
    utterances and a folder of the user's, and the LJSpeech recipe trains a step on clips laid
    out as LJSpeech (its data.root replaced)."""
    import re
    import shutil
    import soundfile

    from test_audio import _espeak_or_fail

    _espeak_or_fail()
    commands = _speech_block_commands()
    assert [c.split()[1] for c in commands] == ["train", "vocode", "vocode", "train"]
    (tmp_path / "my_speech").mkdir()
    soundfile.write(str(tmp_path / "my_speech" / "hello.wav"), voiced(0.5, 120, 0), RATE)
    shutil.copytree(speech, tmp_path / "LJSpeech-1.1")
    short = ("train.steps=2 phases={} metrics=[] log.progress=false log.sample_every=0 data.batch_size=2 "
             "log.checkpoint_every=2")
    env = dict(os.environ, WANDB_MODE="disabled")
    for command in commands:
        command = re.sub(r"^\.venv/bin/", f"{os.path.dirname(sys.executable)}/", command)
        command = command.replace("PATH/LJSpeech-1.1", str(tmp_path / "LJSpeech-1.1"))
        if " train " in f" {command} ":
            command += f" {short}"
        proc = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, (command, proc.stderr[-3000:])
    assert json.loads((tmp_path / "data" / "espeak_speech" / "corpus.json").read_text())["utterances"] == 392
    assert len(list((tmp_path / "vocoded").glob("*.wav"))) == 92  # 6 voices x 6 held-out sentences + the unseen voice's 56
    assert soundfile.info(str(tmp_path / "vocoded_mine" / "hello.wav")).frames == int(0.5 * RATE)
    assert (tmp_path / "runs" / "ljspeech_hifigan_v1" / "checkpoints" / "step-00000002").is_dir()


@pytest.mark.slow
def test_the_vocoder_benchmark_scores_a_run_against_griffin_lim(speech, tmp_path):
    """`python benchmarks/vocoder.py RUN` (README): a table of both vocoders per held-out group,
    the real-time factor, a JSON record and the examples (3 utterances x input | GL | ganforge)."""
    from pathlib import Path

    train(_recipe(tmp_path / "run", speech, 1))
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "vocoder.py"
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "run"), "--out", "examples"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert [line.split()[:2] for line in lines if line.startswith(("held_out", "unseen"))] == [
        ["held_out", "ganforge"], ["held_out", "griffin_lim"], ["unseen", "ganforge"], ["unseen", "griffin_lim"]]
    assert "real-time factor" in proc.stdout
    record = json.loads(next((tmp_path / "benchmarks" / "results").glob("vocoder-speech_hifigan-step1-*.json")).read_text())
    gl, ours = record["results"]["held_out"]["griffin_lim"], record["results"]["held_out"]["ganforge"]
    assert gl["utterances"] == ours["utterances"] == 2 and gl["stoi"] > ours["stoi"]  # (one step of training)
    assert len(list((tmp_path / "examples").glob("*.wav"))) == 9 and (tmp_path / "examples" / "speech_hifigan-spectrograms.png").is_file()


def test_latent_walks_on_a_vocoder_run_point_to_vocode(speech, tmp_path, run_cli):
    """Issue #35: `sample --interpolate` on an audio run pointed to `translate`."""
    train(_recipe(tmp_path / "run", speech, 1))
    code, _, err = run_cli("sample", tmp_path / "run", "--interpolate", "4", "--out", tmp_path / "walks.png")
    assert code == 2 and "a vocoder turns mel spectrograms into audio (use ganforge vocode RUN)" in err
    assert "translate" not in err and err.count("\n") == 1


def test_g_runs_once_a_step_and_trains_as_when_it_ran_twice(speech, tmp_path, monkeypatch):
    """Issue #35: HiFi-GAN's G ran twice a step (~8% of an adversarial step): under no_grad in D's
    phase, then again in G's. D's phase now keeps its output with its graph (Phase.keeps,
    Terms.keep) and G's phase trains through it: one G forward a step, and bitwise the same
    weights as recomputing it (D's update does not touch G)."""
    from ganforge.plugins.audio.vocoder import HiFiGAN

    calls = []

    def count(module, args, output):
        calls.append(torch.is_grad_enabled())

    real_setup = HiFiGAN.setup

    def setup(self, nets):
        real_setup(self, nets)
        nets["G"].register_forward_hook(count)

    monkeypatch.setattr(HiFiGAN, "setup", setup)
    kept = train(_recipe(tmp_path / "kept", speech, 3))
    once = list(calls)  # (and the end's sample grid, without gradients)
    assert sum(once) == 3  # once a step, with its graph
    calls.clear()
    real_init = HiFiGAN.__init__

    def recompute(self, *args, **kwargs):  # the old way: D's phase keeps nothing, G's runs G again
        real_init(self, *args, **kwargs)
        self.phases[0].keeps = ()
        d_loss = self.d_loss
        self.phases[0].loss = lambda y: (lambda t: (setattr(t, "keep", None), t)[1])(d_loss(y))

    monkeypatch.setattr(HiFiGAN, "__init__", recompute)
    twice = train(_recipe(tmp_path / "twice", speech, 3))
    assert len(calls) - len(once) == 3  # one G forward more a step
    for name in kept.nets:
        for a, b in zip(kept.nets[name].state_dict().values(), twice.nets[name].state_dict().values(), strict=True):
            assert torch.equal(a, b), name
