"""``espeak_speech``: an offline multi-voice speech corpus that builds itself with espeak-ng.

ganforge downloads nothing at run time, so the CPU vocoder demo trains on speech synthesised
here: a fixed list of sentences (drawn from a small grammar with a fixed seed) read by several
espeak-ng voices (male and female variants of American, British and Scottish English), each
utterance at its own seeded speed and pitch. espeak-ng writes 22.05 kHz mono 16-bit wav.

    data: {name: espeak_speech}                  # built in data/espeak_speech on first use
    python -m ganforge.plugins.audio.corpus DIR  # or build it yourself

Splits, as HiFi-GAN's file lists (``training.txt``, ``validation.txt``; ``unseen.txt``):
the first ``held_sentences`` sentences are never trained on (each seen voice reads them:
``validation.txt``), and one voice (``UNSEEN``) is held out entirely (``unseen.txt``: HiFi-GAN's
unseen-speaker test). The build is written to a temporary folder and renamed when complete,
so an interrupted build leaves nothing that looks finished; ``corpus.json`` records what was
built and how many minutes of audio each split holds.
"""
from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path
from typing import Any

from ganforge import hookimpl
from ganforge.errors import DatasetError
from ganforge.plugins.audio.data import audio_folder

__all__ = ["VOICES", "UNSEEN", "build_corpus", "espeak_speech", "sentences"]

VERSION = 1
#: espeak-ng voice+variant for each speaker id (training voices)
VOICES = {"us_m3": "en-us+m3", "us_f2": "en-us+f2", "gb_m1": "en-gb+m1", "gb_f4": "en-gb+f4",
          "sc_m7": "en-gb-scotland+m7", "us_f1": "en-us+f1"}
#: the voice held out entirely (female, a variant no training voice uses)
UNSEEN = {"gb_f5": "en-gb+f5"}

_SUBJECTS = ["the old sailor", "a young doctor", "my neighbour", "the tired farmer", "our teacher",
             "a quiet student", "the tall gardener", "her brother", "the clever fox", "a small child",
             "the night nurse", "his grandmother", "the new pilot", "a busy baker", "the river guide"]
_VERBS = ["painted", "carried", "found", "opened", "watched", "repaired", "described", "followed",
          "measured", "counted", "borrowed", "cleaned", "remembered", "delivered", "noticed"]
_OBJECTS = ["the wooden boat", "a bright red kite", "seven silver coins", "the heavy letter",
            "a basket of apples", "the broken window", "two green bottles", "the winter coat",
            "a map of the islands", "the lamp by the door", "nine yellow pencils", "the morning paper"]
_PLACES = ["near the river", "before the storm", "at the station", "in the morning", "under the bridge",
           "after dinner", "on a cold day", "behind the market", "during the long summer", "at half past four"]


def sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct sentences from the grammar, the same for the same seed."""
    rng, out = random.Random(seed), []
    while len(out) < n:
        s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_PLACES)}"
        if rng.random() < 0.3:
            s += f", and then {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"
        s = s[0].upper() + s[1:] + "."
        if s not in out:
            out.append(s)
    return out


def _espeak() -> str:
    found = shutil.which("espeak-ng")
    if found is None:
        raise DatasetError("espeak_speech synthesises its corpus with espeak-ng, which is not installed: "
                           "apt-get install espeak-ng (or point data.root at a built corpus)")
    return found


def _seconds(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def build_corpus(folder: Path, *, per_voice: int = 56, held_sentences: int = 6, seed: int = 0) -> dict[str, Any]:
    """Synthesise the corpus into ``folder`` (LJSpeech's layout: ``wavs/``, ``metadata.csv``,
    and the split lists); returns what ``corpus.json`` records."""
    exe = _espeak()
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        (tmp / "wavs").mkdir()
        texts = sentences(per_voice, seed)
        rng = random.Random(seed + 1)
        rows, lists = [], {"training.txt": [], "validation.txt": [], "unseen.txt": []}
        for speaker, voice in {**VOICES, **UNSEEN}.items():
            for k, text in enumerate(texts):
                name = f"{speaker}_{k:03d}"
                speed, pitch = rng.randint(140, 185), rng.randint(35, 65)
                subprocess.run([exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w",
                                str(tmp / "wavs" / f"{name}.wav"), text], check=True, capture_output=True)
                rows.append(f"{name}|{text}|{text}")
                split = ("unseen.txt" if speaker in UNSEEN else
                         "validation.txt" if k < held_sentences else "training.txt")
                lists[split].append(f"{name}|{text}")
        (tmp / "metadata.csv").write_text("\n".join(rows) + "\n")
        for name, lines in lists.items():
            (tmp / name).write_text("\n".join(lines) + "\n")
        minutes = {name.removesuffix(".txt"): round(sum(_seconds(tmp / "wavs" / f"{line.split('|')[0]}.wav")
                                                        for line in lines) / 60, 2) for name, lines in lists.items()}
        info = {"version": VERSION, "voices": VOICES, "unseen_voice": UNSEEN, "per_voice": per_voice,
                "held_sentences": held_sentences, "seed": seed, "utterances": len(rows), "minutes": minutes,
                "espeak": subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()}
        (tmp / "corpus.json").write_text(json.dumps(info, indent=1) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
        return info
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _built(folder: Path, **settings: int) -> bool:
    """Whether ``folder`` holds a complete corpus of this version, built with ``settings``."""
    try:
        info = json.loads((folder / "corpus.json").read_text())
    except (OSError, ValueError):
        return False
    return info.get("version") == VERSION and all(info.get(k) == v for k, v in settings.items())


def espeak_speech(*, root: str | None, segment: int = 8192, sample_rate: int = 22050,
                  hop: int = 256, eval_limit: int = 64, per_voice: int = 56, held_sentences: int = 6):
    """Offline multi-voice speech synthesised with espeak-ng (built in data.root, default
    data/espeak_speech, on first use): 6 voices x 50 training sentences, 6 held-out sentences per
    voice, one voice held out entirely."""
    folder = Path(root) if root else Path("data") / "espeak_speech"
    if not _built(folder, per_voice=per_voice, held_sentences=held_sentences):
        print(f"espeak_speech: synthesising the corpus in {folder} (espeak-ng; about a minute)", file=sys.stderr)
        build_corpus(folder, per_voice=per_voice, held_sentences=held_sentences)
    return audio_folder(root=str(folder), segment=segment, sample_rate=sample_rate, hop=hop, eval_limit=eval_limit)


@hookimpl
def ganforge_register_datasets(register):
    register("espeak_speech", espeak_speech)


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "data/espeak_speech")
    print(json.dumps(build_corpus(target), indent=1))
