"""Generative synthesis of annotated training patches: a conditional VAE and a conditional GAN.

Both map a label map (background, CSF, GM, WM, lesion, active lesion; :data:`LABELS`) to multi-contrast
image patches with the training images' channels. They are trained inside gdfree on the training patients'
patches (:func:`train_generator`); in training (``generative:`` in the YAML, :class:`GenerativeConfig`) a
share of patches is then replaced by a synthetic one: the label map of a real training patch, with new
lesions from the phantom's library of real lesion shapes drawn into its white matter (each active with
``active_probability``), rendered by the generator. The labels of the new patch are its label map's, so
every synthetic patch is annotated by construction.

- cVAE (Kingma et al. 2014, Sohn et al. 2015): encoder q(z | x, y) to a 4-channel latent at a quarter of the
  resolution; decoder p(x | z, y) from the latent and the label map; loss: squared error in the brain plus
  ``beta`` x KL. Samples draw z ~ N(0, I).
- cGAN (pix2pix, Isola et al. 2017): a MONAI U-Net generator from the label map and two noise channels; a
  PatchGAN discriminator on (image, label map); least-squares adversarial loss plus ``l1`` x L1 to the real
  patch in the brain.

Tissue classes of a real case come from a 3-class k-means of its T1w channel in the brain outside lesions
(CSF darkest, WM brightest): an approximation, not a segmentation. :func:`quality_report` checks a trained
generator: per-class intensity statistics against held-out real patches, the test accuracy of a small
discriminator trained to tell generated from held-out real patches, and a nearest-neighbour distance to the
training patches against that to held-out patches (a generator that copies its training data sits near 0).
"""

from gdfree.data.generative.networks import (
    GENERATORS,
    ConditionalGAN,
    ConditionalVAE,
    build_generator,
    generate,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    one_hot,
    patch_discriminator,
)
from gdfree.data.generative.quality import LabelledPatches, quality_report
from gdfree.data.generative.training import (
    GenerativeConfig,
    Synthesiser,
    collect_patches,
    fit_synthesiser,
    train_generator,
)
from gdfree.data.label_maps import LABELS, add_lesions, case_label_map, crop_label_map

__all__ = [
    "GENERATORS", "LABELS", "ConditionalGAN", "ConditionalVAE", "GenerativeConfig", "LabelledPatches",
    "Synthesiser", "add_lesions", "build_generator", "case_label_map", "collect_patches", "crop_label_map",
    "fit_synthesiser", "generate", "lsgan_discriminator_loss", "lsgan_generator_loss", "one_hot",
    "patch_discriminator", "quality_report", "train_generator",
]  # fmt: skip
