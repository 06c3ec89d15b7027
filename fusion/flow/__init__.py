"""The pipeline's flow logic as plain classes, tested without Ray: the messages its actors
exchange, which inference actor gets a sample, the queue a sample waits in, replay's reading
plan and what a fault leaves to redo. `pipelines/` wraps them in Ray actors and calls."""
