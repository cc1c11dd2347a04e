"""Locations of what ships inside the package: the shapes test split and the trained demo models."""

from pathlib import Path

DEMO_DIR = Path(__file__).parent
SHAPES_DIR = DEMO_DIR / "data" / "shapes"
MODELS_DIR = DEMO_DIR / "models"
