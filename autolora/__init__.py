"""autolora: find the best LoRA for an artistic style, measured and reproducible."""

__version__ = "0.1.0"
__all__ = ["__version__"]
