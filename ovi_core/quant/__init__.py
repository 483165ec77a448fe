"""Smaller fusion-model files: GGUF (Q8_0/Q6_K/Q4_K), scaled fp8, kijai's split and fp8_scaled files.

One concept per module:

* :mod:`~ovi_core.quant.ggml`: the GGML block formats in torch (quantize / dequantize);
* :mod:`~ovi_core.quant.tensor`: :class:`QuantizedWeight`, a packed weight expanded per layer when used;
* :mod:`~ovi_core.quant.fp8`: per-tensor scaled fp8 (``scale_weight``);
* :mod:`~ovi_core.quant.kijai`: kijai's key naming and file layouts, mapped to official names;
* :mod:`~ovi_core.quant.gguf_file`: GGUF reading/writing with ComfyUI-GGUF's conventions;
* :mod:`~ovi_core.quant.stream`: safetensors read/written one tensor at a time;
* :mod:`~ovi_core.quant.sources`: one file of any format seen under official names;
* :mod:`~ovi_core.quant.policy`: which tensors are quantized;
* :mod:`~ovi_core.quant.convert`: streamed conversion (the ``quantize`` command, :mod:`ovi_core.cli.quantize`);
* :mod:`~ovi_core.quant.fp8_compute`: opt-in ``torch._scaled_mm`` on CUDA sm_89+.
"""
