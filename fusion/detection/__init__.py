"""3-D object detection: the object list, its metric and its file format (no Ray, no torch).

- `boxes`: `Box3D`, one object (class, score, centre, size, yaw, velocity, track id) in the
  rig's base frame, validated where it is made; `Samples`, the objects of each sample by token.
- `metrics`: the nuScenes detection benchmark's metric: AP per class and centre-distance
  threshold, mAP, the true-positive errors (ATE, ASE, AOE, AVE) and an NDS-like summary.
- `matching`: the ranking, greedy matching and curves that the metric is computed from.
- `subsets`: pick samples by condition or object count, keep boxes in a range band.
- `nuscenes_format`: ground truth and results as a nuScenes detection submission (JSON).
"""
