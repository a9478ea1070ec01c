"""Baseline models, losses and retrieval metrics for mipkit (HG-CLIM, II-CLVM, EMO-CLIM, VM-NET)."""
