"""Files in and out: checkpoint reading and recognition, safe tensor/JSON reading, atomic writes, saved latents,
the official weight table (and downloads), media (PyAV read/write). The lowest layer with ``runtime``."""
