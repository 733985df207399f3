"""The audio family: speech data, the mel front end, HiFi-GAN's networks, the vocoder system
and its metrics. Nothing outside this folder knows about audio: a vocoder system declares how
its samples are written (:meth:`ganforge.system.GANSystem.write_samples`), its dataset declares
its ``sample_rate``.

- :mod:`.mel`: the mel front end (HiFi-GAN's), Griffin-Lim, the multi-resolution STFT distance;
- :mod:`.data`: ``audio_folder`` (wav/flac clips, LJSpeech's layout);
- :mod:`.corpus`: ``espeak_speech``, an offline multi-voice corpus synthesised with espeak-ng;
- :mod:`.hifigan`: HiFi-GAN's generator (V1/V2/V3) and its multi-period and multi-scale discriminators;
- :mod:`.vocoder`: the ``hifigan`` system;
- :mod:`.metrics`: the ``vocoder`` metrics (mel-L1, MR-STFT, PESQ, STOI, beside Griffin-Lim's).
"""
