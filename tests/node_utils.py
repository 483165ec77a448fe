"""Shared helpers of the node tests: ComfyUI's models folder with the tiny 1.1 weight set, and the Ovi loader nodes
on it (fp32, offload), as ComfyUI runs them."""

import os
import shutil

from nodes import NODE_CLASS_MAPPINGS as N

AUTO = "auto-download: "
#: where each tiny file goes under ComfyUI's models folder (the folders the loader nodes read)
LAYOUT = {"fusion": "diffusion_models", "umt5": "text_encoders", "wan-vae": "vae", "mmaudio-vae": "vae",
          "bigvgan": "vae"}


def tiny_models_dir(tmp_path_factory, keys=tuple(LAYOUT)):
    """A fresh models folder with the tiny 1.1 files of ``keys`` (and the tokenizer beside the text encoder)."""
    from ovi_core.tiny import write_tiny_weights

    paths = write_tiny_weights(str(tmp_path_factory.mktemp("tiny")), version="1.1")
    models = tmp_path_factory.mktemp("models")
    for key in keys:
        os.makedirs(models / LAYOUT[key], exist_ok=True)
        shutil.copy(paths[key], models / LAYOUT[key] / os.path.basename(paths[key]))
    if "umt5" in keys:
        shutil.copytree(paths["tokenizer"], models / "text_encoders" / "google" / "umt5-xxl")
    return models


def load_fusion_model():
    return N["OviFusionModelLoader"]().load(model=AUTO + "model_960x960.safetensors", precision="fp32",
                                            attention="auto", memory_mode="offload", blocks_on_gpu=10,
                                            audio_model="none", version="auto")[0]


def load_text_encoder():
    return N["OviTextEncoderLoader"]().load(text_encoder=AUTO + "models_t5_umt5-xxl-enc-bf16.pth", tokenizer="auto",
                                            precision="fp32", device="default", memory_mode="offload")[0]


def load_video_vae():
    return N["OviVideoVAELoader"]().load(vae=AUTO + "Wan2.2_VAE.pth", precision="fp32", memory_mode="offload")[0]


def load_audio_vae():
    return N["OviAudioVAELoader"]().load(audio_vae=AUTO + "v1-16.pth", vocoder=AUTO + "best_netG.pt",
                                         memory_mode="offload")[0]


def encode(text_encoder, model, prompt: str):
    """OviTextEncode of ``prompt`` (negatives "blur" / "echo") -> the conditioning."""
    return N["OviTextEncode"]().encode(text_encoder, prompt, "blur", "echo", model=model)["result"][0]
