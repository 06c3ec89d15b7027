"""The `fusion` command line, on top of the `fusion` library and the Ray `pipelines`.

Neither of those imports this package; it is the one place that joins them.
"""
