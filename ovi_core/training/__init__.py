"""LoRA fine-tuning of the Ovi fusion DiT: dataset preparation, trainer, command line.

``python -m ovi_core prepare-dataset CLIPS OUT --weights W`` then ``python -m ovi_core train CONFIG.json``
(or ``accelerate launch -m ovi_core train CONFIG.json`` on several GPUs).
"""

from ovi_core.training.config import TrainConfig
from ovi_core.training.dataset import LatentDataset, PrepareConfig, prepare_dataset
from ovi_core.training.trainer import Trainer, TrainResult, flow_matching_loss, loss_curve_image, sample_sigmas, train

__all__ = [
    "LatentDataset",
    "PrepareConfig",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "flow_matching_loss",
    "loss_curve_image",
    "prepare_dataset",
    "sample_sigmas",
    "train",
]
