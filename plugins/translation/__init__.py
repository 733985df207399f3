"""The image-to-image family: the shared contract of translation systems (:mod:`.system`:
``TranslationSystem``, ``Inputs``, pictures), pix2pix and CycleGAN, their networks (U-Net,
ResNet generator, PatchGAN and its multi-scale form), datasets and metrics."""
from ganforge.plugins.translation.system import Inputs, TranslationSystem, arrange, as_rgb, split_batch

__all__ = ["Inputs", "TranslationSystem", "arrange", "as_rgb", "split_batch"]
