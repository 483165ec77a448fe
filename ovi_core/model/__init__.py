"""The Ovi twin-tower fusion DiT: configs, towers, fusion model, loading."""

from ovi_core.model.config import OVI_11B, TINY, FusionConfig, TowerConfig, infer_config
from ovi_core.model.fusion import OviFusionModel
from ovi_core.model.loader import full_size_shapes, load_fusion, save_fusion, shapes_for, write_tiny_fusion

__all__ = [
    "OVI_11B",
    "TINY",
    "FusionConfig",
    "TowerConfig",
    "infer_config",
    "OviFusionModel",
    "full_size_shapes",
    "load_fusion",
    "save_fusion",
    "shapes_for",
    "write_tiny_fusion",
]
