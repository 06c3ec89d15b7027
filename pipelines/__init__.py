"""Ray actors, graph assembly, metrics and the demo server around the `fusion` library."""
