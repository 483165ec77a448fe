"""LoRA for the twin towers of the Ovi fusion DiT.

A LoRA adds ``strength * (alpha / rank) * up(down(dropout(x)))`` to the output of a chosen ``nn.Linear``
of the DiT. The adapters live in a separate :class:`LoRANetwork` and reach the DiT through forward
hooks, so the DiT keeps its official module names and state dict (strict loads still work, and fp8
Linear subclasses are left as they are).

Targets (both towers, every block), chosen by group or by single projection:

* ``self_attn``: ``self_attn.{q,k,v,o}``
* ``cross_attn``: ``cross_attn.{q,k,v,o}`` (text cross-attention; ``q``/``o`` are shared with fusion)
* ``fusion``: ``cross_attn.{k_fusion,v_fusion}`` (the audio<->video bridge)

The default is all attention, the layers the paper fine-tunes (FFNs frozen).

File format: safetensors with ComfyUI-style keys under the official module paths::

    video_model.blocks.0.self_attn.q.lora_down.weight   [rank, in]
    video_model.blocks.0.self_attn.q.lora_up.weight     [out, rank]
    video_model.blocks.0.self_attn.q.alpha              []  (float32)

and metadata ``ovi.lora.*`` (rank, alpha, targets, towers, base model version). Loading also accepts the
Wan2.2-TI2V-5B LoRA conventions (ComfyUI, diffusers/PEFT, kohya; see :mod:`ovi_core.lora.keys`), the FFN and
embedding layers, and full deltas (``.diff`` / ``.diff_b``) of Linear layers, norms and modulation tables.
Tower-less (Wan) names go to the video tower unless ``towers`` says otherwise.

Usage::

    net = load_lora(model, "style.safetensors", strength=0.8)   # active at once; several stack
    net.strength = 0.5; net.merge(); net.unmerge(); net.detach()
"""
