"""Modality-agnostic building blocks that adapters use.

* ``convnet``: a taming-style 2-D convolutional encoder/decoder (:class:`ConvEncoder2d`,
  :class:`ConvDecoder2d`) over any ``[B, C, H, W]`` map (pixels, spectrograms);
* ``gan``: the PatchGAN discriminator, GAN losses and the VQGAN adaptive weight.
"""
