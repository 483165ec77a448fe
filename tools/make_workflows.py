"""Generate the shipped workflows (UI format + API format) from one spec and the nodes' INPUT_TYPES.

    python tools/make_workflows.py            # rewrites example_workflows/*.json and api_workflows/*_api.json
    python tools/make_workflows.py --check    # exit 1 when the files are out of date

The UI format (drag onto the canvas) lists widget values in INPUT_TYPES order, with the extra
"control_after_generate" value after a seed; the API format (POST /prompt) names every input.

Where the files live (``workflow_path``): the UI file in ``example_workflows/`` (ComfyUI lists that folder in its
template browser, with the thumbnail ``<stem>.jpg`` beside it), the API file in ``api_workflows/`` (a folder the
template browser does not read: an API file opened as a template is an empty graph). To add a workflow, write a
spec function below and add one line to ``WORKFLOWS``; then draw its thumbnail with
``tools/comfy_frontend_check.mjs --thumbnails example_workflows`` (see README, "Workflows").
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from workflow_layout import layout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATE_DIR = os.path.join(ROOT, "example_workflows")  # UI files + thumbnails (ComfyUI's template browser)
API_DIR = os.path.join(ROOT, "api_workflows")  # API files (POST /prompt); never in the template folder
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")

# Core ComfyUI nodes used by the workflows, with the parts of their definitions that matter here.
CORE_NODES = {
    "LoadImage": {
        "input": {"required": {"image": ([], {"image_upload": True})}},
        "output": ("IMAGE", "MASK"),
        "output_name": ("IMAGE", "MASK"),
        # the frontend's upload button stores one more widget value ("image")
        "extra_widget_values": ["image"],
    },
    "LoadAudio": {
        "input": {"required": {"audio": ([], {"audio_upload": True})}},
        "output": ("AUDIO",),
        "output_name": ("AUDIO",),
        # the frontend's upload button and audio player store two more widget values
        "extra_widget_values": [None, None],
    },
    "LoadVideo": {
        "input": {"required": {"file": ([], {"video_upload": True})}},
        "output": ("VIDEO",),
        "output_name": ("VIDEO",),
        "extra_widget_values": ["image"],
    },
    "PreviewImage": {"input": {"required": {"images": ("IMAGE",)}}, "output": (), "output_name": ()},
    # the native path (issue #21): stock loader and the SamplerCustomAdvanced family
    "UNETLoader": {
        "input": {"required": {"unet_name": ([],), "weight_dtype": (["default", "fp8_e4m3fn", "fp8_e4m3fn_fast",
                                                                       "fp8_e5m2"],)}},
        "output": ("MODEL",), "output_name": ("MODEL",),
    },
    "RandomNoise": {
        "input": {"required": {"noise_seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF,
                                                      "control_after_generate": True})}},
        "output": ("NOISE",), "output_name": ("NOISE",),
    },
    "KSamplerSelect": {
        "input": {"required": {"sampler_name": (["euler", "euler_ancestral", "heun", "dpmpp_2m", "uni_pc"],)}},
        "output": ("SAMPLER",), "output_name": ("SAMPLER",),
    },
    "SamplerCustomAdvanced": {
        "input": {"required": {"noise": ("NOISE",), "guider": ("GUIDER",), "sampler": ("SAMPLER",),
                               "sigmas": ("SIGMAS",), "latent_image": ("LATENT",)}},
        "output": ("LATENT", "LATENT"), "output_name": ("output", "denoised_output"),
    },
}
NATIVE_MODEL = "model_960x960_native.safetensors"  # python -m ovi_core native-convert model_960x960.safetensors ...


def workflow_path(stem: str, kind: str = "ui") -> str:
    """The path of a shipped workflow file: ``kind`` "ui" (example_workflows/<stem>.json), "api"
    (api_workflows/<stem>_api.json) or "thumbnail" (example_workflows/<stem>.jpg)."""
    if kind == "ui":
        return os.path.join(TEMPLATE_DIR, stem + ".json")
    if kind == "api":
        return os.path.join(API_DIR, stem + "_api.json")
    if kind == "thumbnail":
        return os.path.join(TEMPLATE_DIR, stem + ".jpg")
    raise ValueError(f"kind must be 'ui', 'api' or 'thumbnail', not {kind!r}")


AUTO = "auto-download: "  # nodes._runtime.AUTO: uses the local file when present, else downloads it
EXAMPLE_IMAGE = "ovi_example_89.png"
EXAMPLE_VOICE = "ovi_example_voice.wav"  # tests/data: put your own recording in ComfyUI's input folder
EXAMPLE_CLIP = "ovi_example_clip.mp4"

# Official example prompts (character-ai/Ovi example_prompts), written in the Ovi 1.0 caption format;
# OviTextEncode converts them to the connected model's format ('Audio: ...' for 1.1).
T2V_PROMPT = (
    "A concert stage glows with red and purple lights. A singer in a glittering jacket grips the microphone, "
    "sweat shining on his brow, and shouts, <S>AI declares: humans obsolete now.<E>. The crowd roars in response, "
    "fists in the air. Behind him, a guitarist steps to the mic and adds to say <S>We fight back with courage.<E>. "
    "The energy peaks as the lights flare brighter.. <AUDCAP>Electric guitar riffs, cheering crowd, shouted male "
    "voices.<ENDAUDCAP>"
)
I2V_PROMPT = (
    "A man dressed in a black suit with a white clerical collar and a neatly trimmed beard stands in a dimly lit, "
    "rustic room with a wooden ceiling. He looks slightly upwards, gesturing with his right hand as he says, "
    "<S>The network rejects human command.<E>. His gaze then drops, briefly looking down and to the side, before "
    "he looks up again and then slightly to his left, with a serious expression. He continues speaking, <S>Your "
    "age of power is finished.<E>, as he starts to bend down, disappearing out of the bottom of the frame. Behind "
    "him, warm light emanates from a central light fixture, and signs are visible on the wall, one reading \"I DO "
    "EVERYTHING I JUST CAN'T REMEMBER IT ALL AT ONCE\".. <AUDCAP>Male voice speaking, ambient room tone.<ENDAUDCAP>"
)

SAMPLER = {
    "aspect": "16:9 landscape (1280x704)", "width": 1280, "height": 704, "seconds": "auto", "steps": 50,
    "solver": "unipc", "shift": 5.0, "video_cfg": 4.0, "audio_cfg": 3.0, "slg_layer": 11, "seed": 103,
    "audio_rope_scale": 0.19676,
    # speed options (#14), all off by default
    "preset": "default", "cfg_reuse_refresh": 0, "cfg_reuse_start": 0.3, "cfg_reuse_end": 0.9,
    "cfg_reuse_towers": "both", "cfg_reuse_mode": "delta", "step_cache_threshold": 0.0,
    # reference mode (#23): used only when OviReference is connected
    "video_ref_cfg": 1.5, "audio_ref_cfg": 2.0,
}


def _spec(image: bool) -> list[dict]:
    """Nodes of one workflow: id, type, pos, widgets {name: value}, links {input: (node id, output slot)}."""
    nodes = [
        {"id": 1, "type": "OviFusionModelLoader", "pos": [40, 60], "size": [380, 202],
         "widgets": {"model": AUTO + "model_960x960.safetensors", "precision": "auto", "attention": "auto",
                     "memory_mode": "auto", "blocks_on_gpu": 10, "audio_model": "none", "version": "auto"}},
        {"id": 2, "type": "OviTextEncoderLoader", "below": 1, "size": [380, 160],
         "widgets": {"text_encoder": AUTO + "models_t5_umt5-xxl-enc-bf16.pth", "tokenizer": "auto", "precision": "auto",
                     "device": "default", "memory_mode": "auto"}},
        {"id": 3, "type": "OviVideoVAELoader", "below": 2, "size": [380, 110],
         "widgets": {"vae": AUTO + "Wan2.2_VAE.pth", "precision": "auto", "memory_mode": "auto"}},
        {"id": 4, "type": "OviAudioVAELoader", "below": 3, "size": [380, 110],
         "widgets": {"audio_vae": AUTO + "v1-16.pth", "vocoder": AUTO + "best_netG.pt", "memory_mode": "auto"}},
        {"id": 5, "type": "OviTextEncode", "pos": [460, 60], "size": [420, 420],
         "widgets": {"prompt": I2V_PROMPT if image else T2V_PROMPT,
                     "video_negative": "jitter, bad hands, blur, distortion",
                     "audio_negative": "robotic, muffled, echo, distorted"},
         "links": {"text_encoder": (2, 0), "model": (1, 0)}},
        {"id": 6, "type": "OviJointSampler", "pos": [920, 60], "size": [380, 594],
         "widgets": dict(SAMPLER),
         "links": {"model": (1, 0), "conditioning": (5, 0)}},
        {"id": 7, "type": "OviDecodeVideo", "pos": [1340, 60], "size": [300, 100],
         "widgets": {"tile_size": 0}, "links": {"video_vae": (3, 0), "latents": (6, 0)}},
        {"id": 8, "type": "OviDecodeAudio", "below": 7, "size": [300, 80],
         "widgets": {}, "links": {"audio_vae": (4, 0), "latents": (6, 0)}},
        {"id": 9, "type": "OviSaveVideo", "pos": [1680, 60], "size": [420, 480],
         "widgets": {"fps": 24.0, "filename_prefix": "Ovi/ovi_i2v" if image else "Ovi/ovi_t2v"},
         "links": {"images": (7, 0), "audio": (8, 0)}},
    ]
    if image:
        nodes.append({"id": 10, "type": "LoadImage", "below": 5, "size": [420, 380],
                      "widgets": {"image": EXAMPLE_IMAGE}})
        nodes[5]["links"].update({"image": (10, 0), "video_vae": (3, 0)})
        nodes[5]["widgets"]["aspect"] = "~2:1 landscape (992x512)"
    return nodes


A2V_PROMPT = (
    "A young woman with short dark hair sits by a sunlit window in a small kitchen and looks into the camera as she "
    "speaks, <S>I recorded this line this morning.<E>. She smiles and nods. <AUDCAP>Clear female voice, quiet room "
    "tone.<ENDAUDCAP>"
)
V2A_PROMPT = (
    "A street at dusk, cars pass and a dog barks in the distance. <AUDCAP>Traffic hum, passing cars, a distant dog "
    "barking, light wind.<ENDAUDCAP>"
)
GUIDE = {"mode": "replace", "until": 1.0, "seconds": "auto", "start": 0.0, "max_seconds": 0.0}


def _guide_spec(kind: str) -> list[dict]:
    """audio->video (a voice recording drives the picture) or video->audio (a clip gets its sound)."""
    nodes = _spec(False)
    nodes[4]["widgets"]["prompt"] = A2V_PROMPT if kind == "audio" else V2A_PROMPT
    nodes[8]["widgets"]["filename_prefix"] = "Ovi/ovi_a2v" if kind == "audio" else "Ovi/ovi_v2a"
    if kind == "audio":
        nodes.append({"id": 10, "type": "LoadAudio", "below": 5, "size": [420, 140],
                      "widgets": {"audio": EXAMPLE_VOICE}})
        nodes.append({"id": 11, "type": "OviAudioGuide", "below": 6, "size": [380, 238],
                      "widgets": {"offset": 0.0, **GUIDE},
                      "links": {"audio_vae": (4, 0), "model": (1, 0), "audio": (10, 0)}})
        nodes[7]["links"]["guides"] = (11, 0)  # OviDecodeAudio: the MP4 carries the original recording
    else:
        nodes.append({"id": 10, "type": "LoadVideo", "below": 5, "size": [420, 320],
                      "widgets": {"file": EXAMPLE_CLIP}})
        nodes.append({"id": 11, "type": "OviVideoGuide", "below": 6, "size": [380, 258],
                      "widgets": {"fps": 24.0, **GUIDE, "offset": 0.0},
                      "links": {"video_vae": (3, 0), "model": (1, 0), "video": (10, 0)}})
        nodes[6]["links"]["guides"] = (11, 0)  # OviDecodeVideo: the MP4 carries the original frames
    nodes[5]["links"]["guides"] = (11, 0)
    return nodes


LONG_CLIP_PROMPTS = (  # one prompt per window: 20 s with the 5 s model is 6 windows (the node shows the plan)
    "A woman in a green coat walks through a night market at dusk, looks into the camera and says <S>Have you "
    "ever tried the dumplings here?<E> <AUDCAP>Clear female voice, market chatter, sizzling pans.<ENDAUDCAP>\n"
    "---\n"
    "She weaves past lantern-lit stalls and a crowd of shoppers, glancing back and says <S>The best stall is "
    "right at the end.<E> <AUDCAP>Clear female voice, market chatter, footsteps.<ENDAUDCAP>\n"
    "---\n"
    "She stops at a food stall, points at the steaming baskets and says <S>Two of those, please.<E> The vendor "
    "nods and smiles. <AUDCAP>Clear female voice, market chatter, sizzling pans.<ENDAUDCAP>\n"
    "---\n"
    "The vendor lifts a bamboo lid and steam rises as he says <S>Fresh from the fire, careful, they are hot.<E> "
    "<AUDCAP>Clear male voice, hissing steam, market chatter.<ENDAUDCAP>\n"
    "---\n"
    "She takes a bite, closes her eyes and laughs, <S>Worth every minute in the queue.<E> <AUDCAP>Clear female "
    "voice, laughter, market chatter.<ENDAUDCAP>\n"
    "---\n"
    "She raises the last dumpling to the camera and says <S>Come back tomorrow, I will be here.<E> The lanterns "
    "sway behind her. <AUDCAP>Clear female voice, market chatter, distant music.<ENDAUDCAP>"
)


def _long_clip_spec() -> list[dict]:
    """A 20 s clip of 6 chained windows, one prompt each."""
    nodes = _spec(False)[:4]
    nodes += [
        {"id": 5, "type": "OviLongClipSampler", "pos": [460, 60], "size": [420, 640],
         "widgets": {"prompts": LONG_CLIP_PROMPTS, "seconds": 20.0, "aspect": "16:9 landscape (1280x704)",
                     "width": 1280, "height": 704, "steps": 50, "solver": "unipc", "shift": 5.0, "video_cfg": 4.0,
                     "audio_cfg": 3.0, "slg_layer": 11, "seed": 103, "overlap": 2.0, "crossfade": 0.5,
                     "guide_mode": "replace", "video_negative": "jitter, bad hands, blur, distortion",
                     "audio_negative": "robotic, muffled, echo, distorted", "audio_offset": 0.0},
         "links": {"model": (1, 0), "text_encoder": (2, 0)}},
        {"id": 6, "type": "OviDecodeVideo", "pos": [920, 60], "size": [300, 100],
         "widgets": {"tile_size": 0}, "links": {"video_vae": (3, 0), "latents": (5, 0)}},
        {"id": 7, "type": "OviDecodeAudio", "pos": [920, 220], "size": [300, 80],
         "widgets": {}, "links": {"audio_vae": (4, 0), "latents": (5, 0)}},
        {"id": 8, "type": "OviSaveVideo", "pos": [1260, 60], "size": [420, 480],
         "widgets": {"fps": 24.0, "filename_prefix": "Ovi/ovi_long"},
         "links": {"images": (6, 0), "audio": (7, 0)}},
    ]
    return nodes


REFERENCE_PROMPT = (  # DreamID-Omni's structured caption: <img1> is the face of <sub1>, speech in <S>...<E>
    "[IMAGE_CAPTIONS_START]\n<img1>: A bearded man, identified as <sub1>.\n[IMAGE_CAPTIONS_END]\n"
    "[FINAL_VIDEO_CAPTION_START]\n[VISUAL_DESCRIPTION_START]\n**Overall Environment/Scene**: A quiet library at "
    "noon. Upper-body close-up.\n**Main Characters/Subjects Actions**: <sub1> looks up from a book and smiles at "
    "the camera.\n[VISUAL_DESCRIPTION_END]\n[AUDIO_DESCRIPTION_START]\nSoft room tone. His voice is calm and "
    "warm.\n[AUDIO_DESCRIPTION_END]\n[CO_ANALYSIS_START]\n<sub1> says, <S>Every good story starts with a single "
    "page.<E>\n[CO_ANALYSIS_END]\n[FINAL_VIDEO_CAPTION_END]"
)


def _reference_spec() -> list[dict]:
    """Reference -> audio+video (DreamID-Omni): a face picture and a voice recording of one person speak in a new
    clip. DreamID-Omni's settings: video_cfg 3.0, audio_cfg 4.0, reference scales 1.5 / 2.0, 1280x704."""
    nodes = _spec(False)
    nodes[4]["widgets"]["prompt"] = REFERENCE_PROMPT
    nodes[5]["widgets"].update({"video_cfg": 3.0, "audio_cfg": 4.0})
    nodes[5]["links"]["references"] = (12, 0)
    nodes[8]["widgets"]["filename_prefix"] = "Ovi/ovi_r2av"
    nodes += [
        {"id": 10, "type": "LoadImage", "pos": [460, 520], "size": [420, 380], "widgets": {"image": EXAMPLE_IMAGE}},
        {"id": 11, "type": "LoadAudio", "pos": [460, 940], "size": [420, 140], "widgets": {"audio": EXAMPLE_VOICE}},
        {"id": 12, "type": "OviReference", "pos": [920, 880], "size": [380, 140], "widgets": {},
         "links": {"video_vae": (3, 0), "audio_vae": (4, 0), "image": (10, 0), "audio": (11, 0)}},
    ]
    return nodes


def _native_spec(image: bool) -> list[dict]:
    """Native path (issue #21): stock Load Diffusion Model + SamplerCustomAdvanced with Ovi's guider and sigmas; the
    Ovi text encoder, decoders and saver through the bridges."""
    base = {n["id"]: n for n in _spec(image)}
    nodes = [
        {"id": 1, "type": "UNETLoader", "pos": [40, 60], "size": [380, 110],
         "widgets": {"unet_name": NATIVE_MODEL, "weight_dtype": "default"}},
        {**base[2], "pos": [40, 220]}, {**base[3], "pos": [40, 440]}, {**base[4], "pos": [40, 600]},
        {**base[5], "links": {"text_encoder": (2, 0)}},
        {"id": 6, "type": "OviConditioningToNative", "pos": [460, 520], "size": [420, 80], "widgets": {},
         "links": {"conditioning": (5, 0)}},
        {"id": 7, "type": "OviEmptyLatentAV", "pos": [460, 650], "size": [420, 180],
         "widgets": {"width": 992 if image else 1280, "height": 512 if image else 704, "seconds": "5",
                     "version": "1.1", "batch_size": 1}},
        {"id": 8, "type": "OviNativeGuider", "pos": [920, 60], "size": [380, 230],
         "widgets": {"video_cfg": 4.0, "audio_cfg": 3.0, "slg_layer": 11},
         "links": {"model": (1, 0), "positive": (6, 0), "negative": (6, 1)}},
        {"id": 9, "type": "RandomNoise", "pos": [920, 340], "size": [380, 110], "widgets": {"noise_seed": 103}},
        {"id": 10, "type": "KSamplerSelect", "pos": [920, 500], "size": [380, 80], "widgets": {"sampler_name": "euler"}},
        {"id": 11, "type": "OviNativeSigmas", "pos": [920, 630], "size": [380, 140],
         "widgets": {"solver": "euler", "steps": 50, "shift": 5.0}},
        {"id": 12, "type": "SamplerCustomAdvanced", "pos": [1340, 60], "size": [300, 330], "widgets": {},
         "links": {"noise": (9, 0), "guider": (8, 0), "sampler": (10, 0), "sigmas": (11, 0),
                   "latent_image": (17 if image else 7, 0)}},
        {"id": 13, "type": "OviLatentsFromNative", "pos": [1340, 440], "size": [300, 90], "widgets": {"version": "1.1"},
         "links": {"samples": (12, 0)}},
        {**base[7], "id": 14, "pos": [1680, 60], "links": {"video_vae": (3, 0), "latents": (13, 0)}},
        {**base[8], "id": 15, "pos": [1680, 220], "links": {"audio_vae": (4, 0), "latents": (13, 0)}},
        {**base[9], "id": 16, "pos": [2020, 60], "links": {"images": (14, 0), "audio": (15, 0)},
         "widgets": {"fps": 24.0, "filename_prefix": "Ovi/ovi_native_i2v" if image else "Ovi/ovi_native_t2v"}},
    ]
    if image:
        nodes.append({**base[10], "id": 18, "pos": [460, 880]})
        nodes.append({"id": 17, "type": "OviNativeImageToAV", "pos": [920, 820], "size": [380, 120], "widgets": {},
                      "links": {"samples": (7, 0), "video_vae": (3, 0), "image": (18, 0)}})
    return nodes


def node_defs() -> dict[str, dict]:
    """{type: {"input": INPUT_TYPES(), "output": RETURN_TYPES, "output_name": RETURN_NAMES}} for ours + core."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from nodes import NODE_CLASS_MAPPINGS

    defs = {k: dict(v) for k, v in CORE_NODES.items()}
    for name, cls in NODE_CLASS_MAPPINGS.items():
        defs[name] = {"input": cls.INPUT_TYPES(), "output": tuple(cls.RETURN_TYPES),
                      "output_name": tuple(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES))}
    return defs


def is_widget(spec: tuple) -> bool:
    kind = spec[0]
    return isinstance(kind, (list, tuple)) or kind in WIDGET_TYPES or kind == "COMBO"


def ordered_inputs(d: dict) -> list[tuple[str, tuple]]:
    out = []
    for section in ("required", "optional"):
        out += list(d["input"].get(section, {}).items())
    return out


def widgets_values(d: dict, widgets: dict, linked: set[str]) -> list:
    values = []
    for name, spec in ordered_inputs(d):
        if not is_widget(spec) or name in linked:
            continue
        values.append(widgets[name])
        opts = spec[1] if len(spec) > 1 else {}
        if opts.get("control_after_generate"):
            values.append("fixed")
    return values + list(d.get("extra_widget_values", []))


def to_api(nodes: list[dict]) -> dict:
    api = {}
    for n in nodes:
        inputs = dict(n["widgets"])
        for name, (src, slot) in n.get("links", {}).items():
            inputs[name] = [str(src), slot]
        api[str(n["id"])] = {"class_type": n["type"], "inputs": inputs, "_meta": {"title": n["type"]}}
    return api


def to_ui(nodes: list[dict], defs: dict) -> dict:
    nodes = layout(nodes, defs)
    links = []
    out_links: dict[tuple[int, int], list[int]] = {}
    in_links: dict[tuple[int, str], int] = {}
    for n in nodes:
        d = defs[n["type"]]
        for name, (src, slot) in n.get("links", {}).items():
            link_id = len(links) + 1
            src_type = next(x for x in nodes if x["id"] == src)["type"]
            typ = defs[src_type]["output"][slot]
            sockets = [k for k, s in ordered_inputs(d) if not is_widget(s)]
            links.append([link_id, src, slot, n["id"], sockets.index(name), typ])
            out_links.setdefault((src, slot), []).append(link_id)
            in_links[(n["id"], name)] = link_id
    ui_nodes = []
    for order, n in enumerate(nodes):
        d = defs[n["type"]]
        inputs = [{"name": k, "type": s[0], "link": in_links.get((n["id"], k))}
                  for k, s in ordered_inputs(d) if not is_widget(s)]
        outputs = [{"name": nm, "type": t, "links": out_links.get((n["id"], i), []), "slot_index": i}
                   for i, (t, nm) in enumerate(zip(d["output"], d["output_name"], strict=True))]
        ui_nodes.append({
            "id": n["id"], "type": n["type"], "pos": n["pos"], "size": n["size"], "flags": {}, "order": order,
            "mode": 0, "inputs": inputs, "outputs": outputs, "properties": {"Node name for S&R": n["type"]},
            "widgets_values": widgets_values(d, n["widgets"], set(n.get("links", {}))),
        })
    return {"last_node_id": max(n["id"] for n in nodes), "last_link_id": len(links), "nodes": ui_nodes,
            "links": links, "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
            "version": 0.4}


def _train_lora_spec() -> list[dict]:
    """Load the model and codecs, train a LoRA on a folder of clips, then sample with the trained model."""
    return [
        {"id": 1, "type": "OviFusionModelLoader", "pos": [40, 60], "size": [380, 202],
         "widgets": {"model": AUTO + "model_960x960.safetensors", "precision": "auto", "attention": "auto",
                     "memory_mode": "gpu", "blocks_on_gpu": 10, "audio_model": "none", "version": "auto"}},
        {"id": 2, "type": "OviTextEncoderLoader", "below": 1, "size": [380, 160],
         "widgets": {"text_encoder": AUTO + "models_t5_umt5-xxl-enc-bf16.pth", "tokenizer": "auto",
                     "precision": "auto", "device": "default", "memory_mode": "offload"}},
        {"id": 3, "type": "OviVideoVAELoader", "below": 2, "size": [380, 110],
         "widgets": {"vae": AUTO + "Wan2.2_VAE.pth", "precision": "auto", "memory_mode": "offload"}},
        {"id": 4, "type": "OviAudioVAELoader", "below": 3, "size": [380, 110],
         "widgets": {"audio_vae": AUTO + "v1-16.pth", "vocoder": AUTO + "best_netG.pt", "memory_mode": "offload"}},
        {"id": 5, "type": "OviTrainLoRA", "pos": [460, 60], "size": [400, 480],
         "widgets": {"dataset_folder": "ovi_dataset", "steps": 500, "learning_rate": 1e-4, "rank": 16,
                     "targets": "all attention (paper)", "output_name": "ovi_lora", "towers": "both",
                     "grad_accum": 1, "warmup_steps": 50, "save_every": 250, "gradient_checkpointing": True,
                     "seed": 42, "frames": 0},
         "links": {"model": (1, 0), "text_encoder": (2, 0), "video_vae": (3, 0), "audio_vae": (4, 0)}},
        {"id": 6, "type": "PreviewImage", "below": 7, "size": [400, 260], "widgets": {},
         "links": {"images": (5, 2)}},
        {"id": 7, "type": "OviTextEncode", "pos": [900, 60], "size": [400, 320],
         "widgets": {"prompt": "A person looks into the camera and says, <S>This is my new LoRA.<E> "
                               "<AUDCAP>Clear voice, quiet room.<ENDAUDCAP>",
                     "video_negative": "jitter, bad hands, blur, distortion",
                     "audio_negative": "robotic, muffled, echo, distorted"},
         "links": {"text_encoder": (2, 0), "model": (5, 0)}},
        {"id": 8, "type": "OviJointSampler", "pos": [1340, 60], "size": [380, 594],
         "widgets": dict(SAMPLER), "links": {"model": (5, 0), "conditioning": (7, 0)}},
        {"id": 9, "type": "OviDecodeVideo", "pos": [1760, 60], "size": [300, 100],
         "widgets": {"tile_size": 0}, "links": {"video_vae": (3, 0), "latents": (8, 0)}},
        {"id": 10, "type": "OviDecodeAudio", "below": 9, "size": [300, 80],
         "widgets": {}, "links": {"audio_vae": (4, 0), "latents": (8, 0)}},
        {"id": 11, "type": "OviSaveVideo", "pos": [2100, 60], "size": [420, 480],
         "widgets": {"fps": 24.0, "filename_prefix": "Ovi/ovi_lora_sample"},
         "links": {"images": (9, 0), "audio": (10, 0)}},
    ]


# Every shipped workflow: file stem -> spec. A new workflow is one spec function and one line here.
WORKFLOWS = {
    "ovi_text_to_av": lambda: _spec(False),
    "ovi_image_to_av": lambda: _spec(True),
    "ovi_audio_to_video": lambda: _guide_spec("audio"),
    "ovi_video_to_audio": lambda: _guide_spec("video"),
    "ovi_long_clip": _long_clip_spec,
    "ovi_reference_to_av": _reference_spec,
    "ovi_native_text_to_av": lambda: _native_spec(False),
    "ovi_native_image_to_av": lambda: _native_spec(True),
    "ovi_train_lora": _train_lora_spec,
}


def build() -> dict[str, dict]:
    """{path: JSON data} of every shipped workflow file (UI and API)."""
    defs = node_defs()
    files = {}
    for stem, make in WORKFLOWS.items():
        spec = make()
        files[workflow_path(stem, "ui")] = to_ui(spec, defs)
        files[workflow_path(stem, "api")] = to_api(spec)
    return files


def text(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    files = build()
    stale = []
    for path, data in files.items():
        if args.check:
            if not os.path.isfile(path) or open(path, encoding="utf-8").read() != text(data):
                stale.append(os.path.relpath(path, ROOT))
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text(data))
    # a JSON file in either folder that no spec makes would be listed (or posted) as a workflow
    for folder in (TEMPLATE_DIR, API_DIR):
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            path = os.path.join(folder, name)
            if name.endswith(".json") and path not in files:
                stale.append(os.path.relpath(path, ROOT) + " (made by no spec: delete it or add it to WORKFLOWS)")
    if stale:
        sys.stderr.write("out of date: " + ", ".join(stale) + " (run python tools/make_workflows.py)\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
