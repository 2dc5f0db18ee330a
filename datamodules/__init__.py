"""LightningDataModules emitting [0, 1] pixels, one per dataset."""
from datamodules.base import ClassificationDataModule, UInt8Images
from datamodules.cats_vs_dogs import CatsVsDogsDataModule
from datamodules.image_folder import ImageFolderDataModule
from datamodules.missing import DatasetNotFoundError
from datamodules.synthetic import SyntheticDataModule
from datamodules.tiny_imagenet import TinyImageNetDataModule
from datamodules.torchvision_sets import CIFAR10DataModule, MNISTDataModule

__all__ = [
    "ClassificationDataModule", "UInt8Images", "ImageFolderDataModule", "DatasetNotFoundError",
    "SyntheticDataModule", "CIFAR10DataModule", "MNISTDataModule", "CatsVsDogsDataModule", "TinyImageNetDataModule",
]
