"""Where predictions go: `base` (the Sink contract, JSON lines, Parquet, a callback, ordering and
a background writer), `mcap` (ROS 2 MCAP). `open_sink` picks one from a path."""
