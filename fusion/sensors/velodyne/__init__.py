"""Velodyne LiDARs: `packets` decodes UDP packets, `source` is the `pcap` and `velodyne` backends."""
