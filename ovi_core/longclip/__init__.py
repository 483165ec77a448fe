"""Long clips: chained model windows that carry picture and sound across every seam (see ``plan``)."""
