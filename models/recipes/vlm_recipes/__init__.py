"""Recipes for vlm-edge's demo model: data generation, SigLIP training, export."""
