"""Media tools: ffmpeg (probe, decode, encode)."""
