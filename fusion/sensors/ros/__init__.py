"""ROS robot logs as a source backend: ROS 1 bags, ROS 2 bags (sqlite3 or mcap) and MCAP files.

`bagfile` opens the three file kinds, `types` holds the message types, `messages` converts
messages to and from Frame payloads, `source` is the `rosbag` backend. Everything here reads
bags through `rosbags`, which is imported only when a bag is opened.
"""
