"""Evaluation: retrieval metrics, paired retrieval, emotion-aligned retrieval."""
