"""Audio side of Ovi: 16 kHz mel front end, MMAudio 16 kHz VAE, BigVGAN v1 vocoder and the codec joining them."""
