"""evalkit: batched, resumable, paper-grade evaluation of BLIP-2 models."""

__version__ = "0.1.0"
