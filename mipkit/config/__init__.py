"""Declarative configuration: recipes, taxonomies and mapping tables between label sets."""
