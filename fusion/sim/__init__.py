"""The simulated world: one scene that drives camera, microphone and LiDAR consistently."""

from fusion.sim.world import CLASSES, ObjectClass, ObjectState, World, WorldConfig

__all__ = ["CLASSES", "ObjectClass", "ObjectState", "World", "WorldConfig"]
