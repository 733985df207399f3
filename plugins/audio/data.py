"""Speech for vocoders: ``audio_folder`` (a folder of wav/flac files, LJSpeech's layout read as is).

    data: {name: audio_folder, root: PATH/LJSpeech-1.1}                      # wavs/ + metadata.csv
    data: {name: audio_folder, root: PATH/clips, args: {segment: 8192, held_out: 50}}

Files are read with soundfile, downmixed to mono (with a warning) and resampled to
``sample_rate`` with soxr, then peak-normalised to 0.95 as HiFi-GAN does. Which files are held
out: HiFi-GAN's file lists when the folder has them (``training.txt`` / ``validation.txt``,
lines ``id|text``), plus ``unseen.txt`` for a second held-out group (an unseen speaker); else
``held_out`` files (a number, or a fraction) chosen with a fixed seed.

Training items are **segments**: one per multiple of ``hop`` inside every training clip (an
epoch visits each once, in the loader's shuffled order, with exact resume and a distributed
sampler for free), each fetched at a random offset of 0 to ``hop`` - 1 samples past its start
that keeps it inside its clip, so crops start anywhere, as HiFi-GAN's random crops do
(``jitter: false`` keeps them on the hop grid). The offsets are drawn from torch's global
generator, which checkpoints save and restore. The audio
is held in memory as int16 (one tensor) and a batch is gathered with tensor ops only
(:meth:`AudioSegments.fetch`: the fast path captures it). Held-out clips are whole utterances
(:meth:`AudioSegments.evaluation`).
"""
from __future__ import annotations

import random
import warnings
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ganforge import hookimpl
from ganforge.errors import DatasetError

__all__ = ["AudioSegments", "Utterances", "audio_folder", "read_audio"]

EXTENSIONS = (".wav", ".flac", ".ogg")
PEAK = 0.95  # HiFi-GAN's normalize(audio) * 0.95


def read_audio(path: Path, sample_rate: int) -> tuple[torch.Tensor, bool]:
    """A file as mono float32 at ``sample_rate`` in [-1, 1], and whether it was downmixed."""
    import soundfile

    try:
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # soundfile's LibsndfileError, or a format it does not know
        raise DatasetError(f"{path} is not an audio file soundfile can read (wav, flac, ogg): "
                           f"{str(err).splitlines()[0]}; remove it or convert it") from None
    if audio.shape[0] == 0:
        raise DatasetError(f"{path} holds no samples (a valid header, 0 frames); remove it or record it again")
    mixed = audio.shape[1] > 1
    audio = audio.mean(axis=1)
    if rate != sample_rate:
        import soxr

        audio = soxr.resample(audio, rate, sample_rate)
    return torch.from_numpy(audio.astype("float32")), mixed


def _normalised(audio: torch.Tensor) -> torch.Tensor:
    peak = audio.abs().max()
    return audio * (PEAK / peak) if peak > 0 else audio


@dataclass
class Utterances:
    """Whole clips to vocode (a vocoder system's "noise"): ``audio`` (N, 1, T_max), zero-padded
    at the end; ``lengths`` (N,) in samples; ``groups`` (N,) an index into ``group_names``
    (``held_out``, ``unseen``); ``names`` the files' stems; ``mel``, ``loss_mel``: the vocoder's
    analysis settings (:class:`ganforge.plugins.audio.mel.MelConfig`), set by the system."""

    audio: torch.Tensor
    lengths: torch.Tensor
    groups: torch.Tensor
    group_names: tuple[str, ...] = ("held_out",)
    names: tuple[str, ...] = ()
    show: bool = False  # the training's examples: a spectrogram picture and wavs
    mel: Any = None  # the system's analysis (MelConfig) of G's input, and of its loss
    loss_mel: Any = None

    def __len__(self) -> int:
        return len(self.audio)

    def __getitem__(self, index: slice) -> Utterances:
        names = self.names[index] if self.names else ()
        return replace(self, audio=self.audio[index], lengths=self.lengths[index], groups=self.groups[index],
                       names=names)

    def to(self, device: Any) -> Utterances:
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if isinstance(getattr(self, f.name), torch.Tensor)})

    @staticmethod
    def of(clips: list[torch.Tensor], groups: list[int], group_names: tuple[str, ...], names: list[str]) -> Utterances:
        lengths = torch.tensor([len(c) for c in clips])
        audio = torch.zeros(len(clips), 1, int(lengths.max()) if clips else 0)
        for i, c in enumerate(clips):
            audio[i, 0, :len(c)] = c
        return Utterances(audio, lengths, torch.tensor(groups, dtype=torch.long), group_names, tuple(names))


class AudioSegments(Dataset):
    """Training segments of in-memory speech (see the module docstring)."""

    sample_kind = "audio"

    def __init__(self, data: torch.Tensor, starts: torch.Tensor, segment: int, sample_rate: int,
                 held_out: Utterances, hop: int, room: torch.Tensor | None = None, clips: int | None = None):
        self.data, self.starts, self.segment = data, starts, segment
        self.sample_rate, self.hop, self.held_out = sample_rate, hop, held_out
        self.offsets = torch.arange(segment)
        #: how far past its start each segment may be moved and stay in its clip (None: never)
        self.room = room
        #: what an epoch means for ``per: epoch`` schedules: one crop per training clip, as
        #: HiFi-GAN counts them (its 0.999 per epoch), not every segment of the hop grid
        self.epoch_items = clips

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (1, self.segment)

    def __len__(self) -> int:
        return len(self.starts)

    def fetch(self, index: Any) -> torch.Tensor:
        """Segments at ``index`` (an int or a tensor of indices on the data's device), (B, 1,
        segment) float in [-1, 1], each at a random sub-hop offset: tensor ops only."""
        start = self.starts[index]
        if self.room is not None:
            room = self.room[index]
            start = start + (torch.rand(room.shape, device=room.device) * (room + 1)).long().clamp_max(room)
        where = start.unsqueeze(-1) + self.offsets
        return self.data[where].float().div(32768.0).unsqueeze(-2)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.fetch(index)

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        return self.fetch(torch.as_tensor(indices, device=self.starts.device))

    def evaluation(self) -> Utterances:
        return self.held_out


def _list_file(folder: Path, name: str) -> list[str] | None:
    path = folder / name
    if not path.is_file():
        return None
    return [line.split("|")[0].strip() for line in path.read_text().splitlines() if line.strip()]


def _files(folder: Path) -> dict[str, Path]:
    """Every audio file by stem (LJSpeech: ``wavs/``)."""
    base = folder / "wavs" if (folder / "wavs").is_dir() else folder
    found = {p.stem: p for p in sorted(base.rglob("*")) if p.suffix.lower() in EXTENSIONS and p.is_file()}
    if not found:
        raise DatasetError(f"no audio files ({', '.join(EXTENSIONS)}) in {base}; set data.root to a folder of "
                           f"speech clips (LJSpeech: the folder holding wavs/ and metadata.csv)")
    return found


def _split(folder: Path, files: dict[str, Path], held_out: int | float, seed: int) -> dict[str, list[str]]:
    train, valid, unseen = (_list_file(folder, n) for n in ("training.txt", "validation.txt", "unseen.txt"))
    if train is not None and valid is not None:
        groups = {"train": train, "held_out": valid, **({"unseen": unseen} if unseen else {})}
        for group, names in groups.items():
            missing = [n for n in names if n not in files]
            if missing:
                raise DatasetError(f"{folder}: {len(missing)} clips of its {group} list have no audio file "
                                   f"(first: {missing[0]}); the lists name files by stem, without .wav")
        return groups
    names = sorted(files)
    count = round(held_out * len(names)) if isinstance(held_out, float) else int(held_out)
    if not 0 < count < len(names):
        raise DatasetError(f"held_out={held_out} leaves no training or no held-out clip of {len(names)}; "
                           f"give a number between 1 and {len(names) - 1} or a fraction")
    random.Random(seed).shuffle(names)
    return {"train": sorted(names[count:]), "held_out": sorted(names[:count])}


def audio_folder(*, root: str | None, segment: int = 8192, sample_rate: int = 22050, hop: int = 256,
                 held_out: int | float = 0.05, eval_limit: int = 64, seed: int = 0, jitter: bool = True) -> AudioSegments:
    """wav/flac/ogg speech clips (LJSpeech's wavs/ + metadata.csv read as is): random segments
    of `segment` samples for training (starting anywhere; `jitter: false`: on the hop grid),
    whole held-out clips for evaluation (HiFi-GAN's training.txt / validation.txt lists, plus
    unseen.txt, when present)."""
    if root is None:
        raise DatasetError("audio_folder needs data.root: a folder of speech clips (for LJSpeech, the "
                           "folder holding wavs/ and metadata.csv)")
    folder = Path(root)
    if not folder.is_dir():
        raise DatasetError(f"data.root {folder} is not a folder; point it at the speech clips")
    if segment % hop or segment <= 0:
        raise DatasetError(f"segment ({segment}) must be a positive multiple of hop ({hop}): a mel frame per hop")
    files = _files(folder)
    split = _split(folder, files, held_out, seed)
    if not split["train"]:
        raise DatasetError(f"{folder}: no training clips (its training.txt is empty); list the clips to train on")
    mixed: list[str] = []

    def load(name: str) -> torch.Tensor:
        audio, was_mixed = read_audio(files[name], sample_rate)
        if was_mixed:
            mixed.append(name)
        return _normalised(audio)

    clips, starts, rooms, total = [], [], [], 0
    for name in split["train"]:
        audio = load(name)
        if len(audio) < segment:
            raise DatasetError(f"{files[name]} is {len(audio)} samples long, shorter than one segment ({segment}); "
                               f"remove it or lower data.args.segment")
        begin = torch.arange(total, total + len(audio) - segment + 1, hop)
        starts.append(begin)
        rooms.append((total + len(audio) - segment - begin).clamp_max(hop - 1))  # (the last may not move)
        clips.append(audio)
        total += len(audio)
    groups = [g for g in ("held_out", "unseen") if g in split]
    held = [(g, name, load(name)) for g in groups for name in split[g][:eval_limit]]
    if mixed:
        warnings.warn(f"{len(mixed)} clips have several channels (first: {mixed[0]}); they were mixed down to mono",
                      stacklevel=2)
    data = (torch.cat(clips) * 32767.0).round().to(torch.int16)
    utterances = Utterances.of([a for *_, a in held], [groups.index(g) for g, *_ in held], tuple(groups),
                               [n for _, n, _ in held])
    dataset = AudioSegments(data, torch.cat(starts), segment, sample_rate, utterances, hop,
                            torch.cat(rooms) if jitter else None, clips=len(clips))
    dataset.root = str(folder)
    return dataset


@hookimpl
def ganforge_register_datasets(register):
    register("audio_folder", audio_folder)
