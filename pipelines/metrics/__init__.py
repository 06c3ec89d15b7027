"""Every Prometheus metric of the pipeline (`names`), the recorders actors and the driver use
(`recorders`), and the sink decorator that times predictions on their way out (`sink`).

Route: `ray.util.metrics` in any process (actor or driver) -> the Ray metrics agent of that
process's node (`ray start --metrics-export-port`, or `metrics.port` for the local Ray) ->
Prometheus, which finds every node's agent through Ray's service discovery file. Ray exports
application metrics as `ray_<name>`; deploy/prometheus/prometheus.yml strips that prefix, so the
names in `SPECS` are exactly the names users query (see docs/monitoring.md).

Labels are small fixed sets: modality, stage, reason, kind, edge, actor kind, `class` (the
model's object class names, from its config or checkpoint), and `rig`, whose values are the rig
ids of the config (a rig fuses one sensor per modality, so rig and modality
name a sensor without a sensor-id label). No value comes from a payload or a file name, and
`label()` maps anything that does not look like a code literal or a config id to "other", so a
misbehaving source backend cannot grow the number of series.

Recorders keep the actors thin: an actor builds one in `__init__` (which also counts the
restart when Ray reconstructed the actor) and hands it the plain `fusion/` object's stats after
each call; the recorder exports what grew since the previous call.
"""
