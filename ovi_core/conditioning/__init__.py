"""Bring your own audio or video: inputs that become guides of the joint sampler (``ovi_core.sampling.guides.Guide``).

- :mod:`.ranges`: time <-> latent index arithmetic of both streams and the ``--redo`` syntax;
- :mod:`.audio_in`: a sound (file or waveform, any rate, mono/stereo) placed at an offset -> audio guide;
- :mod:`.video_in`: frames (file or IMAGE + fps) -> 24 fps, the model's size -> video guide;
- :mod:`.redo`: redo a time range of an existing clip (MP4 or saved latents).

Each input has ``stream``, ``encode(component, *, device) -> Guide`` (the Wan2.2 VAE for video, the audio codec
for audio) and, where the user gave media, ``splice(decoded) -> decoded`` that puts the original back.
"""
