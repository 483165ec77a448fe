"""LoRA fine-tuning of the Ovi fusion DiT: dataset preparation, trainer, command line.

``python -m ovi_core prepare-dataset CLIPS OUT --weights W`` then ``python -m ovi_core train CONFIG.json``
(or ``accelerate launch -m ovi_core train CONFIG.json`` on several GPUs).
"""
