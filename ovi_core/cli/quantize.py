"""``python -m ovi_core quantize IN OUT --format fp8|fp8_scaled|q8_0|q6_k|q4_k``: the command line of
:func:`ovi_core.quant.convert.quantize_file`, with the output place and the input file checked first
(:func:`ovi_core.validate.check_plan`), before the input is read."""

from __future__ import annotations

import argparse
import json
import sys

from ovi_core.quant.policy import FORMATS, GGUF_FORMATS


def register(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser("quantize", help="write a smaller fusion model: fp8 / fp8_scaled safetensors or GGUF "
                                        "(q8_0, q6_k, q4_k), streamed, official tensor names")
    q.add_argument("input", help="Ovi fusion file (official or kijai layout, .safetensors)")
    q.add_argument("output", help="output file: .safetensors for fp8/fp8_scaled, .gguf for q8_0/q6_k/q4_k")
    q.add_argument("--format", required=True, choices=FORMATS)
    q.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ovi_core import validate
    from ovi_core.io.files import regular_file
    from ovi_core.quant.convert import quantize_file

    regular_file(args.input, "quantize input")
    suffix = ".gguf" if args.format in GGUF_FORMATS else ".safetensors"
    validate.check_plan(validate.Plan(outputs=[(args.output, (suffix,))]))
    rep = quantize_file(args.input, args.output, format=args.format)
    json.dump(rep, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0
