"""Image data sets in the ImageNet layout (``split/class/image.jpg``), from a folder or a tar file.

Three ways in, one kind of result: every data set here is a ``torch.utils.data.Dataset`` whose
items are ``(image, label)`` with ``image`` a float32 tensor of shape (C, H, W), normalised with a
per-channel mean and std, and ``label`` an int; C is 3 (RGB) or 1 (grayscale, ``channels=1``:
decoded as Pillow's "L", cached as (N, 1, H, W)). Each has ``classes`` (sorted folder names),
``labels`` (int64 tensor of shape (N,)), ``channels``, ``mean`` and ``std``.

- :func:`image_folder` reads an extracted folder or a plain (uncompressed) tar directly. With
  ``cache_dir`` it decodes every JPEG once into a memory-mappable uint8 array
  (``images.npy`` of shape (N, C, H, W)) and later epochs, and later runs, read that instead: a
  :class:`DecodedImageDataset`. Without ``cache_dir`` it decodes on every access: an
  :class:`ImageFileDataset`. The cache is rebuilt when its source changes (path, size, mtime) or
  when ``image_size`` or ``channels`` changes.
- A folder of one's own: :func:`survey_images` reads a sample of its headers (classes, sizes,
  grayscale or colour) and :func:`measure_stats` its per-channel mean and std, to normalise with
  instead of ImageNet's.
- :func:`cifar10` reads CIFAR-10 through torchvision (which downloads it on a user's machine) or,
  given a folder holding ``train.tar``/``test.tar`` or ``train/``/``test/`` in the ImageNet layout,
  through :func:`image_folder`; both give a :class:`DecodedImageDataset` with the same classes.
- ImageNet goes through :func:`image_folder` with ``image_size=224`` and no cache (a decoded cache
  of 1.28M full-size images does not fit on most disks): training images get the standard
  random-resized crop (Szegedy et al. 2015, scale 0.08-1, aspect 3/4-4/3) and a flip, evaluation
  images a resize of the shorter side to ``image_size / crop_fraction`` and a centre crop. The
  validation split must be laid out in class folders like the training split. A cache with a small
  ``image_size`` (e.g. 64, a downsampled ImageNet) works too.

Augmentation (``augment=``):

=================  =========================================================================
``"auto"``         ``"none"`` unless ``split == "train"``; for training ``"resized_crop"`` when
                   decoding on the fly at a given ``image_size``, otherwise ``"crop"``
``"crop"``         the CIFAR recipe: zero-pad by ``padding`` (4), random crop back to (H, W),
                   random horizontal flip (``flip=False``: none); batched tensor ops on uint8
                   (:func:`random_crop_flip`)
``"resized_crop"`` the ImageNet recipe above; only when decoding on the fly with ``image_size``
``"none"``         no augmentation
=================  =========================================================================

Randomness comes from torch's global generator, which ``DataLoader`` seeds per worker from
``torch.manual_seed``, so a seeded run is repeatable. Pillow and torchvision are the ``vision``
extra; they load inside the functions that need them (through :func:`matryoshka._optional.require`).

The modules:

=================  =========================================================================
``transforms``     mean/std constants, :func:`normalize`, :func:`random_crop_flip`, the
                   random-resized-crop box, the checks of ``augment``, ``channels``, ``mean``
                   and ``std``
``sources``        folder and tar sources: finding a split, listing classes and samples
``decode``         decoding one image file to uint8 (C, H, W) with Pillow
``cache``          the decoded uint8 cache: folder name, key, atomic build, load and validate
``datasets``       :class:`DecodedImageDataset` and :class:`ImageFileDataset`
``survey``         :func:`survey_images` (headers: sizes, colour) and :func:`measure_stats`
``loaders``        the entry points :func:`image_folder` and :func:`cifar10`
=================  =========================================================================
"""

from __future__ import annotations

from matryoshka.data.images.datasets import DecodedImageDataset, ImageFileDataset
from matryoshka.data.images.loaders import cifar10, image_folder
from matryoshka.data.images.sources import IMAGE_EXTENSIONS
from matryoshka.data.images.survey import ImageSurvey, measure_stats, survey_images
from matryoshka.data.images.transforms import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Augment,
    normalize,
    random_crop_flip,
    random_resized_box,
)

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "Augment",
    "DecodedImageDataset",
    "ImageFileDataset",
    "ImageSurvey",
    "cifar10",
    "image_folder",
    "measure_stats",
    "normalize",
    "random_crop_flip",
    "random_resized_box",
    "survey_images",
]
