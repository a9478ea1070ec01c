"""Training data: image-music pairs, YouTube-8M frames, the embedding cache."""
