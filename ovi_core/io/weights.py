"""Where each official weight file lives, locally and on the Hugging Face Hub.

The local layout is the official download's (``download_weights.py`` of character-ai/Ovi)::

    DIR/Ovi/model.safetensors                      (Ovi 1.0, 720x720, 5 s)
    DIR/Ovi/model_960x960.safetensors              (Ovi 1.1, 960x960, 5 s)
    DIR/Ovi/model_960x960_10s.safetensors          (Ovi 1.1, 960x960, 10 s)
    DIR/Ovi/model_fp8_e4m3fn.safetensors           (Ovi 1.0 fp8, optional)
    DIR/Wan2.2-TI2V-5B/Wan2.2_VAE.pth
    DIR/Wan2.2-TI2V-5B/models_t5_umt5-xxl-enc-bf16.pth
    DIR/Wan2.2-TI2V-5B/google/umt5-xxl/            (tokenizer folder)
    DIR/MMAudio/ext_weights/v1-16.pth
    DIR/MMAudio/ext_weights/best_netG.pt
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightFile:
    local: str  # path relative to the weights folder
    repo: str  # Hugging Face repo id
    filename: str  # path inside the repo (a folder pattern ends with '/')
    what: str


FUSION_FILES = {
    "1.0": WeightFile("Ovi/model.safetensors", "chetwinlow1/Ovi", "model.safetensors", "Ovi 1.0 fusion DiT (720x720, 5 s)"),
    "1.1": WeightFile(
        "Ovi/model_960x960.safetensors", "chetwinlow1/Ovi", "model_960x960.safetensors", "Ovi 1.1 fusion DiT (960x960, 5 s)"
    ),
    "1.1-10s": WeightFile(
        "Ovi/model_960x960_10s.safetensors",
        "chetwinlow1/Ovi",
        "model_960x960_10s.safetensors",
        "Ovi 1.1 fusion DiT (960x960, 10 s)",
    ),
    "1.0-fp8": WeightFile(
        "Ovi/model_fp8_e4m3fn.safetensors",
        "rkfg/Ovi-fp8_quantized",
        "model_fp8_e4m3fn.safetensors",
        "Ovi 1.0 fusion DiT, fp8 e4m3fn",
    ),
}

COMPONENT_FILES = {
    "wan-vae": WeightFile("Wan2.2-TI2V-5B/Wan2.2_VAE.pth", "Wan-AI/Wan2.2-TI2V-5B", "Wan2.2_VAE.pth", "Wan2.2 VAE"),
    "umt5": WeightFile(
        "Wan2.2-TI2V-5B/models_t5_umt5-xxl-enc-bf16.pth",
        "Wan-AI/Wan2.2-TI2V-5B",
        "models_t5_umt5-xxl-enc-bf16.pth",
        "UMT5-XXL text encoder",
    ),
    "tokenizer": WeightFile("Wan2.2-TI2V-5B/google/umt5-xxl", "Wan-AI/Wan2.2-TI2V-5B", "google/umt5-xxl/", "UMT5 tokenizer"),
    "mmaudio-vae": WeightFile("MMAudio/ext_weights/v1-16.pth", "hkchengrex/MMAudio", "ext_weights/v1-16.pth",
                              "MMAudio 16 kHz audio VAE"),
    "bigvgan": WeightFile("MMAudio/ext_weights/best_netG.pt", "hkchengrex/MMAudio", "ext_weights/best_netG.pt",
                          "BigVGAN 16 kHz vocoder"),
}


@dataclass(frozen=True)
class WeightPaths:
    fusion: str
    version: str  # '1.0', '1.1' or '1.1-10s' (the file's family; fp8 is '1.0')
    umt5: str
    tokenizer: str
    wan_vae: str
    mmaudio_vae: str
    bigvgan: str


def _present(root: str, wf: WeightFile) -> bool:
    p = os.path.join(root, wf.local)
    if wf.filename.endswith("/"):
        return os.path.isdir(p) and bool(os.listdir(p))
    return os.path.isfile(p)


def download_file(wf: WeightFile, target_dir: str, *, flatten: bool = False) -> str:
    """Fetch ``wf`` from the Hugging Face Hub into ``target_dir``; return the local path.

    Without ``flatten`` the repo's sub-folders are kept (``target_dir/<wf.filename>``, the official layout);
    with it a file lands at ``target_dir/<basename>`` (ComfyUI's flat model folders). Raises
    :class:`FileNotFoundError` naming the file and where to put it by hand when the download fails.
    """
    import contextlib
    import shutil

    name = wf.filename.rstrip("/")
    dest = os.path.join(target_dir, name if wf.filename.endswith("/") or not flatten else os.path.basename(name))
    if offline():
        raise FileNotFoundError(f"Could not download {wf.what} (huggingface.co/{wf.repo}, file {wf.filename}): "
                                f"HF_HUB_OFFLINE is set. Download it by hand to {dest}.")
    try:
        from huggingface_hub import hf_hub_download, snapshot_download

        logger.info("downloading %s (%s:%s) into %s", wf.what, wf.repo, wf.filename, target_dir)
        os.makedirs(target_dir, exist_ok=True)
        if wf.filename.endswith("/"):
            snapshot_download(repo_id=wf.repo, allow_patterns=[wf.filename + "*"], local_dir=target_dir)
            return dest
        got = hf_hub_download(repo_id=wf.repo, filename=wf.filename, local_dir=target_dir)
    except Exception as e:  # noqa: BLE001 (ImportError and network errors of many kinds)
        raise FileNotFoundError(
            f"Could not download {wf.what} (huggingface.co/{wf.repo}, file {wf.filename}): {type(e).__name__}: "
            f"{str(e).strip().rstrip('.')}. Download it by hand to {dest}."
        ) from e
    if os.path.abspath(got) != os.path.abspath(dest):  # a repo sub-folder (ext_weights/...) flattened
        shutil.move(got, dest)
        with contextlib.suppress(OSError):
            os.removedirs(os.path.dirname(got))
    return dest


def offline() -> bool:
    """True when the Hugging Face Hub must not be contacted (``HF_HUB_OFFLINE``)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def pick_version(root: str, *, version: str = "auto", seconds: int | None = None, fp8: bool = False) -> str:
    """Choose the fusion file: an explicit version, else what is present (10 s needs 1.1-10s)."""
    if version != "auto":
        if version not in FUSION_FILES:
            raise ValueError(f"Unknown model version {version!r}; choose one of {sorted(FUSION_FILES)} or 'auto'.")
        return version
    if fp8:
        return "1.0-fp8"
    if seconds == 10:
        return "1.1-10s"
    for v in ("1.1", "1.0", "1.1-10s", "1.0-fp8"):
        if _present(root, FUSION_FILES[v]):
            return v
    return "1.1"


def resolve_weights(
    root: str, *, version: str = "auto", seconds: int | None = None, fp8: bool = False, download: bool | None = None,
    need_fusion: bool = True,
) -> WeightPaths:
    """Return the paths of every file a generation needs, fetching missing ones when allowed.

    ``download=None`` downloads only when ``HF_HUB_OFFLINE`` is not set. ``need_fusion=False`` (the fusion
    model comes from elsewhere, e.g. ``generate --fusion``) leaves the fusion file out of the check. Offline (or when a download
    fails), a single :class:`FileNotFoundError` lists every missing file and where it comes from.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"Weights folder {root!r} does not exist. Create it or pass the right --weights.")
    v = pick_version(root, version=version, seconds=seconds, fp8=fp8)
    needed = {"fusion": FUSION_FILES[v], **COMPONENT_FILES} if need_fusion else dict(COMPONENT_FILES)
    missing = {k: wf for k, wf in needed.items() if not _present(root, wf)}
    if missing:
        if download is None:
            download = not offline()
        errors = []
        if download:
            for k, wf in list(missing.items()):
                prefix = wf.local[: len(wf.local) - len(wf.filename.rstrip("/"))]
                try:
                    download_file(wf, os.path.join(root, prefix))
                    if _present(root, wf):
                        missing.pop(k)
                except FileNotFoundError as e:
                    errors.append(str(e))
        if missing:
            lines = [f"  {os.path.join(root, wf.local)}  <- {wf.what}: huggingface.co/{wf.repo} file {wf.filename}"
                     for wf in missing.values()]
            msg = "Missing weight files (download them to these paths, or run online to fetch them):\n" + "\n".join(lines)
            if errors:
                msg += "\nDownload errors:\n  " + "\n  ".join(errors)
            raise FileNotFoundError(msg)
    j = lambda wf: os.path.join(root, wf.local)  # noqa: E731
    return WeightPaths(
        fusion=j(FUSION_FILES[v]),
        version="1.0" if v == "1.0-fp8" else v,
        umt5=j(COMPONENT_FILES["umt5"]),
        tokenizer=j(COMPONENT_FILES["tokenizer"]),
        wan_vae=j(COMPONENT_FILES["wan-vae"]),
        mmaudio_vae=j(COMPONENT_FILES["mmaudio-vae"]),
        bigvgan=j(COMPONENT_FILES["bigvgan"]),
    )
