"""The simulated world: one scene that drives camera, microphone and LiDAR consistently."""

from fusion.sim.objects import CLASS_NAMES, CLASSES, ObjectClass, ObjectModel
from fusion.sim.world import (
    Conditions,
    Episode,
    Noise,
    ObjectState,
    Scene,
    Track,
    Weather,
    World,
    WorldConfig,
)

__all__ = [
    "CLASSES",
    "CLASS_NAMES",
    "Conditions",
    "Episode",
    "Noise",
    "ObjectClass",
    "ObjectModel",
    "ObjectState",
    "Scene",
    "Track",
    "Weather",
    "World",
    "WorldConfig",
]
