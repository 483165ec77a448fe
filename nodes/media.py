"""Safe media loaders: a sound or a video from ComfyUI's input folder, opened like every file this project reads
(:func:`ovi_core.io.media.open_media`: the file protocol only, an allow-list of container formats).

Core ``LoadAudio`` / ``LoadVideo`` open an uploaded file with FFmpeg's format detection: a file named ``voice.wav``
that is an ffconcat list or an HLS playlist makes FFmpeg read the files (or URLs) it names, and their content ends
up in the output. These nodes refuse such files with a message naming the detected format; on a server that
accepts uploads, use them for the sound and frames given to the Ovi guides.
"""

from __future__ import annotations

import os

from . import _comfy

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".aac", ".m4a", ".opus", ".mp4", ".mov", ".mkv", ".webm")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")


def input_files(extensions: tuple[str, ...]) -> list[str]:
    """Files of ComfyUI's input folder (sub-folders use '/') with one of ``extensions``, sorted."""
    root = _comfy.input_dir()
    out = []
    if os.path.isdir(root):
        for dirpath, _, files in os.walk(root):
            for f in files:
                if f.lower().endswith(extensions):
                    out.append(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
    return sorted(out)


def input_path(name: str) -> str:
    """The full path of ``name`` inside the input folder; a name leading outside it (``..``, an absolute path, a
    link elsewhere) is refused."""
    root = os.path.realpath(_comfy.input_dir())
    path = os.path.realpath(os.path.join(root, str(name)))
    if os.path.commonpath((root, path)) != root:
        raise ValueError(f"{name!r} is not inside ComfyUI's input folder; upload the file there and pick it.")
    return path


class OviLoadAudio:
    """A sound file from the input folder -> AUDIO, read through the project's safe media reader."""

    @classmethod
    def INPUT_TYPES(cls):
        files = input_files(AUDIO_EXTENSIONS) or ["(no audio files in the input folder)"]
        return {"required": {"audio": (files, {
            "audio_upload": True,
            "tooltip": "A sound in ComfyUI's input folder (wav, flac, mp3, ogg, aac/m4a, or the sound of an "
                       "mp4/mov/mkv/webm). Playlists and concat lists are refused, whatever their name."})}}

    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("audio",)
    OUTPUT_TOOLTIPS = ("The sound as ComfyUI AUDIO (waveform [1, C, T] float, its own sample rate); to "
                       "OviAudioGuide or OviLongClipSampler.",)
    FUNCTION = "load"
    CATEGORY = "Ovi/guides"
    SEARCH_ALIASES = ["load audio safely", "load sound", "voice file", "audio file"]
    DESCRIPTION = ("Loads a sound like core LoadAudio, but only from plain audio/video containers: a file that is a "
                   "playlist or an FFmpeg concat list (which would read other files) is refused.")

    @classmethod
    def IS_CHANGED(cls, audio):
        try:
            return os.path.getmtime(input_path(audio))
        except (OSError, ValueError):
            return float("nan")

    def load(self, audio):
        from ovi_core.io.media import read_audio

        waveform, rate = read_audio(input_path(audio))  # [C, T] float32, capped in channels, rate and length
        return ({"waveform": waveform[None], "sample_rate": int(rate)},)


class OviLoadVideo:
    """A video file from the input folder -> IMAGE frames + fps, read through the project's safe media reader."""

    @classmethod
    def INPUT_TYPES(cls):
        files = input_files(VIDEO_EXTENSIONS) or ["(no video files in the input folder)"]
        return {"required": {"video": (files, {
            "video_upload": True,
            "tooltip": "A video in ComfyUI's input folder (mp4, mov, mkv, webm, avi). Playlists and concat lists are "
                       "refused, whatever their name; at most 60 s are read."})}}

    RETURN_TYPES = ("IMAGE", "FLOAT")
    RETURN_NAMES = ("images", "fps")
    OUTPUT_TOOLTIPS = ("The frames [N, H, W, 3] in [0, 1] (a stream whose size changes is scaled to its first "
                       "frame's; variable frame rate placed by timestamps); to OviVideoGuide's images.",
                       "Their frame rate; to OviVideoGuide's fps.")
    FUNCTION = "load"
    CATEGORY = "Ovi/guides"
    SEARCH_ALIASES = ["load video safely", "video file", "load frames"]
    DESCRIPTION = ("Loads a video's frames like core LoadVideo, but only from plain video containers: a file that is "
                   "a playlist or an FFmpeg concat list (which would read other files) is refused.")

    @classmethod
    def IS_CHANGED(cls, video):
        try:
            return os.path.getmtime(input_path(video))
        except (OSError, ValueError):
            return float("nan")

    def load(self, video):
        from ovi_core.conditioning.video_in import read_video_file

        frames, fps = read_video_file(input_path(video))  # uint8, at most MAX_VIDEO_SECONDS
        return (frames.float().div_(255.0), float(fps))


NODE_CLASS_MAPPINGS = {"OviLoadAudio": OviLoadAudio, "OviLoadVideo": OviLoadVideo}
NODE_DISPLAY_NAME_MAPPINGS = {"OviLoadAudio": "Ovi Load Audio (safe)", "OviLoadVideo": "Ovi Load Video (safe)"}
