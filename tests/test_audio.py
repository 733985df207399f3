"""The audio family's parts (plugins/audio): the mel front end, HiFi-GAN's networks, the
vocoder's losses against hand-computed values, the speech data and its bad inputs, the
metrics and the espeak-ng corpus."""
import math
import shutil

import numpy as np
import pytest
import torch

from ganforge.errors import ConfigError, DatasetError
from ganforge.plugins.audio.data import audio_folder
from ganforge.plugins.audio.hifigan import hifigan_generator, hifigan_mpd, hifigan_msd
from ganforge.plugins.audio.mel import Mel, MelConfig, griffin_lim, mel_filters
from ganforge.contract.system import Judgement, d_adversarial, feature_matching, g_adversarial

from audio_helpers import RATE, make_clips, voiced


# ------------------------------------------------------------------ the mel front end
def test_mel_equals_a_direct_computation_of_hifigans_recipe():
    """Reflect pad (n_fft - hop) / 2, Hann-window frames every hop without centring, |rfft| with
    HiFi-GAN's 1e-9, librosa's Slaney filters, log(clamp 1e-5): by hand in numpy, float64."""
    c = MelConfig()
    x = voiced(0.3, 120, 0)[:6400]  # 25 frames of 256
    mel = Mel(c)(torch.from_numpy(x).reshape(1, 1, -1))[0].double().numpy()
    pad = (c.n_fft - c.hop) // 2
    y = np.pad(x.astype(np.float64), pad, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(c.win) / c.win)  # periodic Hann
    frames = [y[k * c.hop:k * c.hop + c.n_fft] * window for k in range((len(y) - c.n_fft) // c.hop + 1)]
    spectrum = np.fft.rfft(np.stack(frames), axis=1)
    magnitude = np.sqrt(spectrum.real ** 2 + spectrum.imag ** 2 + 1e-9).T
    expected = np.log(np.maximum(mel_filters(c).astype(np.float64) @ magnitude, 1e-5))
    assert mel.shape == (80, len(x) // c.hop) == expected.shape
    assert np.abs(mel - expected).max() < 2e-4


def test_mel_runs_in_fp32_under_autocast_and_takes_both_layouts():
    x = torch.from_numpy(voiced(0.1, 150, 1)[:2048])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = Mel()(x.reshape(1, 1, -1))
    assert out.dtype == torch.float32
    assert torch.equal(out, Mel()(x.reshape(1, -1)))


def test_mel_config_refuses_what_hifigans_padding_cannot_do():
    with pytest.raises(ValueError, match="even n_fft - hop"):
        MelConfig(n_fft=1024, hop=255)
    with pytest.raises(ValueError, match="fmax"):
        MelConfig(fmax=12000)


# ------------------------------------------------------------------ networks
@pytest.mark.parametrize("version, hop", [("v1", 256), ("v2", 256), ("v3", 256)])
def test_the_generators_upsampling_product_is_the_hop(version, hop):
    G = hifigan_generator(n_mels=80, hop=hop, version=version)
    assert G.hop == hop
    with torch.no_grad():
        out = G(torch.zeros(1, 80, 3))
    assert out.shape == (1, 1, 3 * hop)


def test_the_generators_versions_are_the_papers():
    counts = {v: sum(p.numel() for p in hifigan_generator(n_mels=80, hop=256, version=v).parameters())
              for v in ("v1", "v2", "v3")}
    # the paper's Table 1: 13.92M, 0.92M, 1.46M parameters
    assert counts["v1"] == pytest.approx(13.92e6, rel=0.01)
    assert counts["v2"] == pytest.approx(0.92e6, rel=0.02)
    assert counts["v3"] == pytest.approx(1.46e6, rel=0.01)


@pytest.mark.parametrize("kwargs, message", [
    ({"version": "v3", "rates": [8, 8, 2]}, "multiply to 128, but the mel hop is 256"),
    ({"version": "v9"}, "version is one of v1, v2, v3"),
    ({"version": "v3", "depth": 3}, "has no argument depth"),
])
def test_a_generator_that_does_not_fit_is_one_line(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        hifigan_generator(n_mels=80, hop=256, **kwargs)


def test_each_period_discriminator_sees_every_p_th_sample():
    """A (T / p, p) reshape with (k, 1) kernels: a change at sample t reaches only column t mod p
    of every feature map and logit map (the reference's receptive field)."""
    torch.manual_seed(0)
    mpd = hifigan_mpd(in_shape=(1, 600), width=0.02)
    x = torch.randn(1, 1, 600)
    bumped = x.clone()
    bumped[..., 301] += 1.0
    with torch.no_grad():
        a, b = mpd(x), mpd(bumped)
    assert [len(f) for f in a.features] == [6] * 5  # 5 convs + the output, per period
    for d, p, fa, fb in zip(mpd.discriminators, (2, 3, 5, 7, 11), a.features, b.features, strict=True):
        assert d.period == p
        for feature_a, feature_b in zip(fa, fb, strict=True):
            assert feature_a.shape[-1] == p  # (B, C, T / p, p)
            changed = (feature_a - feature_b).abs().sum(dim=(0, 1, 2)) > 0
            assert changed.nonzero().flatten().tolist() == [301 % p], p


def test_the_period_discriminator_pads_a_length_that_is_not_a_multiple():
    mpd = hifigan_mpd(in_shape=(1, 601), width=0.02, periods=[7])
    with torch.no_grad():
        out = mpd(torch.randn(2, 1, 601))
    assert out.features[0][0].shape[-2:] == (math.ceil(math.ceil(601 / 7) / 3), 7)
    assert out.logits[0].shape[0] == 2


def test_the_scale_discriminator_judges_the_raw_and_pooled_waveforms():
    msd = hifigan_msd(in_shape=(1, 1024), width=0.02)
    views = msd.views(torch.randn(1, 1, 1024))
    assert [v.shape[-1] for v in views] == [1024, 513, 257]  # AvgPool1d(4, 2, padding=2) twice
    with torch.no_grad():
        out = msd(torch.randn(2, 1, 1024))
    assert len(out.logits) == 3 and all(len(f) == 8 for f in out.features)  # 7 convs + the output
    first, others = msd.discriminators[0], msd.discriminators[1:]
    assert type(first.convs[0].parametrizations.weight[0]).__name__ == "_SpectralNorm"
    assert all(type(d.convs[0].parametrizations.weight[0]).__name__ == "_WeightNorm" for d in others)


@pytest.mark.parametrize("factory, message", [(hifigan_mpd, "judges mono waveforms"), (hifigan_msd, "judges mono")])
def test_a_discriminator_on_images_is_one_line(factory, message):
    with pytest.raises(ConfigError, match=message):
        factory(in_shape=(1, 28, 28))


# ------------------------------------------------------------------ losses by hand
def _judgement(seed, shapes=((2, 5), (2, 3))):
    g = torch.Generator().manual_seed(seed)
    return Judgement([torch.randn(*s, generator=g) for s in shapes],
                     [[torch.randn(2, 4, generator=g), torch.randn(2, 3, generator=g)] for _ in shapes])


def test_lsgan_and_feature_matching_over_sub_discriminators_equal_hifigans_formulas(precision):
    """HiFi-GAN's discriminator_loss, generator_loss and feature_loss (models.py), by hand; the
    system's weights (lsgan halves, adversarial_weight 2) give its G loss exactly. Under bf16 the
    discriminators' outputs are bf16: the terms are computed in fp32 on them (compared with the
    formulas on the same values upcast)."""
    from ganforge.plugins.losses import LeastSquares

    def low(j):  # what the discriminators hand over under autocast
        return Judgement([x.to(precision.dtype) for x in j.logits], [[f.to(precision.dtype) for f in fs] for fs in j.features])

    real, fake = low(_judgement(0)), low(_judgement(1))
    with precision.autocast():
        d, _ = d_adversarial(LeastSquares(), real, fake)
        g, _ = g_adversarial(LeastSquares(), fake)
        fm = feature_matching(real, fake)
    assert d.dtype == g.dtype == fm.dtype == torch.float32
    real = Judgement([x.float() for x in real.logits], [[f.float() for f in fs] for fs in real.features])
    fake = Judgement([x.float() for x in fake.logits], [[f.float() for f in fs] for fs in fake.features])
    hifigan_d = sum(torch.mean((1 - r) ** 2) + torch.mean(f ** 2) for r, f in zip(real.logits, fake.logits))
    assert d.item() == pytest.approx(0.5 * hifigan_d.item(), rel=1e-6)
    hifigan_g = sum(torch.mean((1 - f) ** 2) for f in fake.logits)
    assert 2 * g.item() == pytest.approx(hifigan_g.item(), rel=1e-6)
    hifigan_fm = sum(torch.mean(torch.abs(r - f)) for rs, fs in zip(real.features, fake.features) for r, f in zip(rs, fs))
    assert fm.item() == pytest.approx(hifigan_fm.item(), rel=1e-6)  # (the system weighs it by 2, as HiFi-GAN)


# ------------------------------------------------------------------ data
def test_audio_folder_holds_segments_at_every_hop_of_the_training_clips(tmp_path):
    root = make_clips(tmp_path / "speech", n=6, seconds=0.5, lists=True)
    ds = audio_folder(root=str(root), segment=2048, eval_limit=8, jitter=False)
    assert ds.sample_shape == (1, 2048) and ds.sample_rate == RATE
    clip = int(0.5 * RATE)
    per_clip = (clip - 2048) // 256 + 1
    assert len(ds) == 2 * per_clip  # training.txt: the first 2 of 6
    batch = ds.__getitems__([0, per_clip - 1, per_clip])
    assert batch.shape == (3, 1, 2048) and batch.dtype == torch.float32
    import soundfile

    first, _ = soundfile.read(str(root / "wavs" / "clip_00.wav"), dtype="float32")
    first = first / np.abs(first).max() * 0.95  # HiFi-GAN's peak normalisation
    assert np.abs(batch[0, 0].numpy() - first[:2048]).max() < 1.5 / 32768
    last = 256 * (per_clip - 1)
    assert np.abs(batch[1, 0].numpy() - first[last:last + 2048]).max() < 1.5 / 32768
    held = ds.evaluation()
    assert held.group_names == ("held_out", "unseen")
    assert list(held.names) == ["clip_02", "clip_03", "clip_04", "clip_05"]
    assert held.groups.tolist() == [0, 0, 1, 1] and held.lengths.tolist() == [clip] * 4
    assert len(held[1:3]) == 2 and held[1:3].names == ("clip_03", "clip_04")
    # by default each fetch moves a segment by 0 to hop - 1 samples, inside its clip (HiFi-GAN's
    # crops start anywhere; the hop grid alone reached 1/256 of the positions)
    jittered = audio_folder(root=str(root), segment=2048, eval_limit=8)
    torch.manual_seed(0)
    for index, start in ((0, 0), (per_clip - 1, last)):
        rows = jittered.__getitems__([index] * 64)[:, 0].numpy()
        found = set()
        for row in rows:
            shifts = [o for o in range(256) if start + o + 2048 <= clip
                      and np.abs(row - first[start + o:start + o + 2048]).max() < 1.5 / 32768]
            assert len(shifts) == 1, shifts
            found |= set(shifts)
        room = min(255, clip - 2048 - start)
        assert found <= set(range(room + 1)) and len(found) > min(room, 20)


def test_audio_folder_without_lists_holds_out_a_seeded_choice_and_resamples(tmp_path):
    root = make_clips(tmp_path / "speech", n=10, seconds=0.4, rate=16000)
    ds = audio_folder(root=str(root), segment=1024, held_out=3)
    assert len(ds.evaluation()) == 3 and ds.evaluation().lengths.tolist() == [int(0.4 * 22050)] * 3
    again = audio_folder(root=str(root), segment=1024, held_out=3)
    assert again.evaluation().names == ds.evaluation().names


def test_a_stereo_clip_is_mixed_down_with_one_warning(tmp_path):
    import soundfile

    root = make_clips(tmp_path / "speech", n=4, seconds=0.3)
    mono = voiced(0.3, 200, 9)
    soundfile.write(str(root / "wavs" / "clip_00.wav"), np.stack([mono, mono], 1), RATE)
    with pytest.warns(UserWarning, match="1 clips have several channels .*mixed down to mono"):
        audio_folder(root=str(root), segment=1024, held_out=1)


@pytest.mark.parametrize("damage, message", [
    ("junk", r"clip_01.wav is not an audio file soundfile can read .* remove it or convert it"),
    ("zero_frames", r"clip_01.wav holds no samples \(a valid header, 0 frames\); remove it or record it again"),
    ("short", r"clip_01.wav is 300 samples long, shorter than one segment \(1024\); remove it or lower data.args.segment"),
    ("empty", r"no audio files \(.wav, .flac, .ogg\) in .*; set data.root to a folder of speech clips"),
    ("lists", r"1 clips of its held_out list have no audio file \(first: nowhere\)"),
    ("no_training", r"no training clips \(its training.txt is empty\)"),
])
def test_bad_audio_is_one_line(tmp_path, damage, message):
    import soundfile

    root = make_clips(tmp_path / "speech", n=4, seconds=0.3)
    clip = root / "wavs" / "clip_01.wav"
    if damage == "junk":
        clip.write_bytes(b"this is not audio")
    elif damage == "zero_frames":
        soundfile.write(str(clip), np.zeros(0, np.float32), RATE)
    elif damage == "short":
        soundfile.write(str(clip), voiced(0.3, 150, 0)[:300], RATE)
    elif damage == "empty":
        shutil.rmtree(root / "wavs")
        (root / "wavs").mkdir()
    elif damage == "lists":
        (root / "training.txt").write_text("clip_00|a\nclip_01|b\n")
        (root / "validation.txt").write_text("nowhere|c\n")
    else:
        (root / "training.txt").write_text("")
        (root / "validation.txt").write_text("clip_00|a\n")
    with pytest.raises(DatasetError, match=message) as err:
        audio_folder(root=str(root), segment=1024, held_out=1)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"root": None}, "audio_folder needs data.root"),
    ({"segment": 1000}, r"segment \(1000\) must be a positive multiple of hop \(256\)"),
    ({"held_out": 4}, "held_out=4 leaves no training or no held-out clip of 4"),
    ({"hop_length": 256}, "has no argument 'hop_length'"),
])
def test_bad_audio_settings_are_one_line(tmp_path, kwargs, message):
    from ganforge.errors import GanforgeError
    from ganforge.contract.manager import PluginManager

    root = make_clips(tmp_path / "speech", n=4, seconds=0.3)
    where = kwargs.pop("root", str(root))
    with pytest.raises(GanforgeError, match=message) as err:  # as a recipe's data.args reach it
        PluginManager().registry.build("dataset", "audio_folder", {"segment": 1024, "held_out": 1, **kwargs},
                                       root=where, download=False)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------ metrics
def test_vocoder_metrics_score_the_recording_itself_as_perfect_and_noise_as_bad(tmp_path, monkeypatch):
    from dataclasses import replace

    from ganforge.plugins.audio import metrics as vocoder_metrics
    from ganforge.plugins.audio.metrics import vocoder

    calls = []
    real_griffin_lim = vocoder_metrics.griffin_lim
    monkeypatch.setattr(vocoder_metrics, "griffin_lim", lambda *a, **k: calls.append(1) or real_griffin_lim(*a, **k))

    ds = audio_folder(root=str(make_clips(tmp_path / "speech", n=6, seconds=1.0, lists=True)), segment=1024)
    inputs = replace(ds.evaluation(), mel=MelConfig(), loss_mel=MelConfig(fmax=None))
    metric = vocoder(dataset=ds)
    perfect = metric(inputs.audio.clone(), ds, inputs=inputs)
    assert perfect["held_out/mel_l1"] < 1e-6 and perfect["unseen/mel_l1"] < 1e-6
    assert perfect["held_out/stoi"] > 0.999 and perfect["held_out/pesq"] > 4.5
    noise = metric(0.1 * torch.randn_like(inputs.audio), ds, inputs=inputs)
    assert noise["held_out/stoi"] < 0.3 and noise["held_out/pesq"] < 1.5 and noise["held_out/mel_l1"] > 1.0
    assert noise["held_out/mrstft"] > perfect["held_out/mrstft"] + 1
    # Griffin-Lim from the same mels: between the two, computed once for both calls (4 utterances)
    assert len(calls) == len(inputs) == 4 and noise["held_out/gl_stoi"] == perfect["held_out/gl_stoi"]
    assert noise["held_out/stoi"] < perfect["held_out/gl_stoi"] < 0.999


def test_griffin_lim_is_aligned_with_the_input():
    """Realigned to Mel's frames: bursts of noise come back where they were (the envelopes'
    cross-correlation peaks at lag 0, not at librosa's half-hop offset), and their mels are close."""
    c = MelConfig()
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(16 * 1024)
    for start in range(1000, 15000, 2300):
        x[start:start + 400] = 0.5 * torch.randn(400, generator=g)
    mel = Mel(c)(x.reshape(1, 1, -1))[0]
    y = griffin_lim(mel, c, len(x))
    assert y.shape == x.shape
    loud = mel.max(0).values > -4  # the bursts' frames (silence is log(1e-5) in the input)
    assert (Mel(c)(y.reshape(1, 1, -1))[0] - mel)[:, loud].abs().mean() < 0.5

    def envelope(a):
        return a.square().reshape(-1, 32).mean(1)

    ex, ey = envelope(x), envelope(y)
    lags = range(-12, 13)  # in steps of 32 samples: -384 .. 384
    score = [float((torch.roll(ey, lag) * ex).sum()) for lag in lags]
    assert lags[int(np.argmax(score))] == 0


# ------------------------------------------------------------------ the espeak-ng corpus
def _espeak_or_fail():
    import os

    if shutil.which("espeak-ng") is None:
        assert not os.environ.get("GANFORGE_REQUIRE_ESPEAK"), "GANFORGE_REQUIRE_ESPEAK is set but espeak-ng is not on PATH"
        pytest.skip("needs espeak-ng (Debian: apt-get install espeak-ng); .ci/run installs it and sets "
                    "GANFORGE_REQUIRE_ESPEAK, so there this test fails instead")


def test_the_espeak_corpus_builds_reproducibly_with_a_held_out_voice(tmp_path):
    _espeak_or_fail()
    from ganforge.plugins.audio.corpus import UNSEEN, VOICES, build_corpus, espeak_speech, sentences

    info = build_corpus(tmp_path / "a", per_voice=4, held_sentences=1)
    assert info["utterances"] == 4 * (len(VOICES) + len(UNSEEN))
    lists = {n: (tmp_path / "a" / f"{n}.txt").read_text().splitlines() for n in ("training", "validation", "unseen")}
    assert len(lists["training"]) == 3 * len(VOICES) and len(lists["validation"]) == len(VOICES)
    unseen = next(iter(UNSEEN))
    assert all(line.startswith(unseen) for line in lists["unseen"]) and len(lists["unseen"]) == 4
    assert not any(line.startswith(unseen) for line in lists["training"] + lists["validation"])
    held_text = sentences(4)[0]
    assert all(line.endswith(held_text) for line in lists["validation"])
    assert not any(line.endswith(held_text) for line in lists["training"])
    import soundfile

    info_wav = soundfile.info(str(tmp_path / "a" / "wavs" / f"{unseen}_000.wav"))
    assert (info_wav.samplerate, info_wav.channels) == (22050, 1)
    assert info["minutes"]["training"] > 0.1
    build_corpus(tmp_path / "b", per_voice=4, held_sentences=1)
    for name in ("metadata.csv", "training.txt", "unseen.txt"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    a, b = (soundfile.read(str(tmp_path / d / "wavs" / "us_f2_002.wav"))[0] for d in ("a", "b"))
    assert np.array_equal(a, b)  # espeak-ng is deterministic
    # the dataset reads the built corpus without rebuilding it (the wav is left as is)
    stamp = (tmp_path / "a" / "wavs" / "us_f2_002.wav").stat().st_mtime_ns
    ds = espeak_speech(root=str(tmp_path / "a"), per_voice=4, held_sentences=1, segment=4096)
    assert (tmp_path / "a" / "wavs" / "us_f2_002.wav").stat().st_mtime_ns == stamp
    assert ds.evaluation().group_names == ("held_out", "unseen") and len(ds) > 0


def test_without_espeak_the_corpus_is_one_line(tmp_path, monkeypatch):
    from ganforge.plugins.audio.corpus import espeak_speech

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DatasetError, match="espeak-ng, which is not installed: apt-get install espeak-ng"):
        espeak_speech(root=str(tmp_path / "corpus"))
    assert not (tmp_path / "corpus").exists() and not list(tmp_path.glob(".corpus-*"))


def test_an_epoch_of_audio_folder_is_one_crop_per_training_clip(tmp_path):
    """Issue #35: per: epoch counted every hop-aligned segment as an item (~430k steps an epoch on
    LJSpeech), so HiFi-GAN's 0.999 per epoch decayed almost nothing. The dataset defines its
    epoch: one crop per training clip, as HiFi-GAN counts."""
    from types import SimpleNamespace

    from ganforge.training.step import TrainStep

    root = make_clips(tmp_path / "speech", n=6, seconds=0.5, lists=True)
    ds = audio_folder(root=str(root), segment=2048, eval_limit=8)
    assert ds.epoch_items == 2 and len(ds) > 20  # training.txt's 2 clips, many segments
    runner = SimpleNamespace(fresh=1, device_batches=False, state=SimpleNamespace(
        dataset=ds, accelerator=SimpleNamespace(num_processes=1), config=SimpleNamespace(
            data=SimpleNamespace(batch_size=1, name="audio_folder")), loader=list(range(len(ds)))))
    assert TrainStep._steps_per_epoch(runner) == 2.0  # not len(ds) = every segment
    runner.state.dataset = SimpleNamespace()  # a dataset without its own epoch: one pass over the items
    assert TrainStep._steps_per_epoch(runner) == len(ds)
