"""The engine's learned state on disk: codec, versioned checkpoint, migrations."""
