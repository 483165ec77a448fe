"""Command line: ``python -m ovi_core <command> ...``.

Commands are registered by module: each module listed in ``_COMMAND_MODULES`` defines
``register(subparsers)`` which adds its sub-parser and sets ``func`` (``func(args) -> int``).

Flags are never abbreviated: :class:`ArgumentParser` turns argparse's prefix matching off, and sub-parsers
made with ``add_parser`` inherit its class, so ``--audio 3`` is an error instead of ``--audio-cfg 3``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

# component name -> module exposing full_size_shapes() and shapes_for(shapes)
COMPONENTS: dict[str, str] = {
    "fusion": "ovi_core.model.loader",
    "umt5": "ovi_core.text.umt5",
    "wan-vae": "ovi_core.vae.wan_vae",
    "mmaudio-vae": "ovi_core.audio.mmaudio_vae",
    "bigvgan": "ovi_core.audio.bigvgan",
}

# identification component -> key of COMPONENTS used to check a strict load
_IDENT_TO_COMPONENT = {
    "ovi-fusion": "fusion",
    "ovi-video-tower": "fusion",
    "ovi-audio-tower": "fusion",
    "umt5-xxl": "umt5",
    "wan2.2-vae": "wan-vae",
    "mmaudio-vae-16k": "mmaudio-vae",
    "bigvgan-16k": "bigvgan",
}

# modules adding further sub-commands (generate, tiny-weights, train, ...)
_COMMAND_MODULES = (
    "ovi_core.cli.generate",
    "ovi_core.cli.decode",
    "ovi_core.tiny",
    "ovi_core.cli.train",
    "ovi_core.cli.quantize",
)


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` without abbreviated long options (``allow_abbrev=False`` by default).

    ``add_subparsers`` makes sub-parsers of the parent's class, so every sub-command gets the same rule.
    """

    def __init__(self, *args, allow_abbrev: bool = False, **kwargs) -> None:
        super().__init__(*args, allow_abbrev=allow_abbrev, **kwargs)


def iter_parsers(parser: argparse.ArgumentParser):
    """``parser`` and all its sub-parsers, depth first."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases share a parser
                yield from iter_parsers(sub)


def _cmd_keys(args: argparse.Namespace) -> int:
    mod = importlib.import_module(COMPONENTS[args.component])
    shapes = mod.full_size_shapes()
    json.dump(shapes, sys.stdout)
    sys.stdout.write("\n")
    return 0


def inspect_file(path: str) -> dict:
    """Describe a checkpoint file and check whether it loads strictly into our module."""
    from ovi_core.cli.inspect import format_of, fusion_report, needs_own_report
    from ovi_core.io import checkpoints as ck
    from ovi_core.io.checkpoint_id import identify

    if needs_own_report(path):  # GGUF, kijai layout, fp8_scaled
        return fusion_report(path)
    infos = ck.peek(path)
    ident = identify(infos, path=path)
    report = {
        "file": path,
        "component": ident.component,
        "description": ident.description,
        "version": ident.version,
        "dtype": ident.dtype,
        "parameters": ident.num_params,
        "tensors": len(infos),
        "notes": list(ident.notes),
        "loads_strictly": False,
    }
    if ident.component == "lora":  # a LoRA is checked as the LoRA loader reads it
        from ovi_core.lora.files import network_from_state_dict, read_lora
        from ovi_core.lora.model import lora_info

        try:
            info = lora_info(path)
            sd, meta = read_lora(path)
            network_from_state_dict(sd, metadata=meta, device="cpu")
            report.update(rank=info.rank, layers=info.layers, towers=list(info.towers), targets=list(info.targets),
                          version=info.base_version, loads_strictly=True)
        except ValueError as e:
            report["problem"] = str(e)
        return report
    comp = _IDENT_TO_COMPONENT.get(ident.component)
    if comp == "fusion":
        src = format_of(path)
        if src is not None:
            report["format"] = src.describe()
    if comp is None:
        report["problem"] = "not a component ComfyUI-Ovi loads" if not ident.compatible else "no strict check"
        return report
    mod = importlib.import_module(COMPONENTS[comp])
    shapes = {k: v.shape for k, v in infos.items()}
    try:
        expected = mod.shapes_for(shapes)
        ck.check_shapes(expected, shapes, path=path, what=comp, ident=ident)
        report["loads_strictly"] = True
    except ValueError as e:
        report["problem"] = str(e)
    return report


def _cmd_inspect(args: argparse.Namespace) -> int:
    ok = True
    for path in args.files:
        try:
            rep = inspect_file(path)
        except (ValueError, FileNotFoundError) as e:
            rep = {"file": path, "error": str(e), "loads_strictly": False}
        ok = ok and rep["loads_strictly"]
        json.dump(rep, sys.stdout, indent=1)
        sys.stdout.write("\n")
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m ovi_core", description="Ovi audio+video generation tools")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    k = sub.add_parser("keys", help="print the full-size state dict {name: shape} of a component as JSON")
    k.add_argument("component", choices=sorted(COMPONENTS))
    k.set_defaults(func=_cmd_keys)

    i = sub.add_parser("inspect", help="say what a checkpoint file is and whether it loads strictly")
    i.add_argument("files", nargs="+")
    i.set_defaults(func=_cmd_inspect)

    for name in _COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name or (e.name and name.startswith(e.name + ".")):
                continue  # that command is not part of this build
            raise
        mod.register(sub)
    for parser in iter_parsers(p):  # also a sub-parser someone built with another class
        parser.allow_abbrev = False
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. an output that could not be written (the message says where the work was kept)
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
