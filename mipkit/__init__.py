"""mipkit: build cross-modal music retrieval datasets from public media."""

__version__ = "0.1.0"
