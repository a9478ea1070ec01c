"""Infrastructure every layer uses: errors, statuses, ids, paths, files, console output."""
