"""Where and how the networks run: device and precision choice, the CLI's memory modes (offload, block swap),
the attention backend dispatcher. The lowest layer with ``io``."""
