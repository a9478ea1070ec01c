"""Dataset kinds: readers of each input (MIPNet manifest, AudioSet mood, YouTube-8M) plugged into the pipeline."""
