"""LightningDataModules emitting [0, 1] pixels, one per dataset; the options every one of
them takes (augment, balance, split, in_memory, loader settings) live in the base."""
from datamodules.augmentations import AUGMENTATIONS, create_augmentations
from datamodules.base import ClassificationDataModule, UInt8Images
from datamodules.cats_vs_dogs import CatsVsDogsDataModule
from datamodules.cross_model import CrossModelAugmentedDataModule
from datamodules.image_folder import ImageFolderDataModule, ImageNetSubsetDataModule
from datamodules.missing import DatasetNotFoundError
from datamodules.oxford_pet import OxfordPetDataModule
from datamodules.pregenerated import PregeneratedAdversarialDataModule
from datamodules.synthetic import SyntheticDataModule
from datamodules.tiny_imagenet import TinyImageNetDataModule
from datamodules.torchvision_sets import (CIFAR10DataModule, CIFAR100DataModule, FashionMNISTDataModule,
                                          MNISTDataModule)

__all__ = [
    "ClassificationDataModule", "UInt8Images", "DatasetNotFoundError", "AUGMENTATIONS", "create_augmentations",
    "SyntheticDataModule", "MNISTDataModule", "FashionMNISTDataModule", "CIFAR10DataModule", "CIFAR100DataModule",
    "ImageFolderDataModule", "ImageNetSubsetDataModule", "CatsVsDogsDataModule", "OxfordPetDataModule",
    "TinyImageNetDataModule", "PregeneratedAdversarialDataModule", "CrossModelAugmentedDataModule",
]
