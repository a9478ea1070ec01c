"""The mipkit command line: app.py registers every command group."""
