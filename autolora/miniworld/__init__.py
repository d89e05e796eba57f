"""Miniworld: a procedural world of shapes, colours and styles where every score has a ground truth."""

from autolora.miniworld.world import COLOURS, HELD_OUT_STYLES, SHAPES, STYLES, Item, caption, draw, sample_items

__all__ = ["COLOURS", "HELD_OUT_STYLES", "SHAPES", "STYLES", "Item", "caption", "draw", "sample_items"]
