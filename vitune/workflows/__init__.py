"""Recipes that wire the library end to end (the offline demo)."""
