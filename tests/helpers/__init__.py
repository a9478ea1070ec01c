"""Test helpers: synthetic datasets, media and YouTube-8M fixtures."""
