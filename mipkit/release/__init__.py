"""Release a build: dataset card, publishing (Hub, folder), hydrate, privacy scrubbing."""
