"""Model labels for built datasets (PaSST AudioSet moods)."""
