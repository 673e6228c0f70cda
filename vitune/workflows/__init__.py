"""Recipes that wire the library end to end: the offline demo, and prepare at a model's image size."""
