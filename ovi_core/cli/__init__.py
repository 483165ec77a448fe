"""Every ``python -m ovi_core ...`` command: the argparse front ends and their flag groups (the top layer).

``main`` dispatches; ``generate`` (+ ``guides``, ``longclip``, ``speed`` flag groups), ``decode``, ``inspect``,
``train`` (``prepare-dataset``, ``train``). Each calls one library function; nothing below imports this package.
"""
