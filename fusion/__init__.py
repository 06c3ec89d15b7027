"""perceiver-fusion: multimodal sensor fusion with an iterative Perceiver. This package imports no Ray."""

__version__ = "0.1.0"
