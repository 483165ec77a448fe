"""ComfyUI node classes (the only layer that talks to ComfyUI).

Classic (V1) node API. Node ids never change once shipped. ComfyUI itself is reached only through
``nodes._comfy``, which degrades gracefully when ComfyUI is absent.
"""

from .decode import OviDecodeAudio, OviDecodeVideo
from .guides import NODE_CLASS_MAPPINGS as _GUIDE_NODES
from .guides import NODE_DISPLAY_NAME_MAPPINGS as _GUIDE_NAMES
from .loaders import OviAudioVAELoader, OviFusionModelLoader, OviTextEncoderLoader, OviVideoVAELoader
from .longclip import NODE_CLASS_MAPPINGS as _LONGCLIP_NODES
from .longclip import NODE_DISPLAY_NAME_MAPPINGS as _LONGCLIP_NAMES
from .lora import NODE_CLASS_MAPPINGS as _LORA_NODES
from .lora import NODE_DISPLAY_NAME_MAPPINGS as _LORA_NAMES
from .media import NODE_CLASS_MAPPINGS as _MEDIA_NODES
from .media import NODE_DISPLAY_NAME_MAPPINGS as _MEDIA_NAMES
from .outputs import OviLoadLatents, OviSaveLatents, OviSaveVideo
from .sampling import OviJointSampler, OviTextEncode

NODE_CLASS_MAPPINGS: dict[str, type] = {
    "OviFusionModelLoader": OviFusionModelLoader,
    "OviTextEncoderLoader": OviTextEncoderLoader,
    "OviVideoVAELoader": OviVideoVAELoader,
    "OviAudioVAELoader": OviAudioVAELoader,
    "OviTextEncode": OviTextEncode,
    "OviJointSampler": OviJointSampler,
    "OviDecodeVideo": OviDecodeVideo,
    "OviDecodeAudio": OviDecodeAudio,
    "OviSaveVideo": OviSaveVideo,
    "OviSaveLatents": OviSaveLatents,
    "OviLoadLatents": OviLoadLatents,
    **_LORA_NODES,
    **_GUIDE_NODES,
    **_LONGCLIP_NODES,
    **_MEDIA_NODES,
}

NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "OviFusionModelLoader": "Ovi Model Loader",
    "OviTextEncoderLoader": "Ovi Text Encoder Loader (UMT5-XXL)",
    "OviVideoVAELoader": "Ovi Video VAE Loader (Wan2.2)",
    "OviAudioVAELoader": "Ovi Audio VAE Loader (MMAudio + BigVGAN)",
    "OviTextEncode": "Ovi Text Encode",
    "OviJointSampler": "Ovi Joint Audio+Video Sampler",
    "OviDecodeVideo": "Ovi Decode Video",
    "OviDecodeAudio": "Ovi Decode Audio",
    "OviSaveVideo": "Ovi Save Video (MP4)",
    "OviSaveLatents": "Ovi Save Latents",
    "OviLoadLatents": "Ovi Load Latents",
    **_LORA_NAMES,
    **_GUIDE_NAMES,
    **_LONGCLIP_NAMES,
    **_MEDIA_NAMES,
}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
