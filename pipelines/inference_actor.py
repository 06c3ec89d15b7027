"""The model's Ray actor: a thin shell around `fusion.inference.InferenceEngine`.

Only inference workers load torch: it is imported when the actor is built, not with this module.
A Ray worker that receives a handle to this actor (a fuser does) loads the actor's class to
know its methods, and the sensor side must not pay torch's seconds of import and hundreds of MB
for that.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import ray

from fusion.batching import DynamicBatcher
from fusion.flow.messages import InferenceInfo, InferFailed, Inferred, LinkReply
from fusion.model_spec import ResolvedModel, load_model
from fusion.sample import FusedSample, Prediction
from pipelines.local_link import LinkError, LinkServer, Reply
from pipelines.metrics.recorders import InferenceMetrics

if TYPE_CHECKING:
    from fusion.inference import InferenceEngine

log = logging.getLogger(__name__)


def _sample_check(message: Any) -> str | None:
    return (
        None if isinstance(message, FusedSample) else f"expected a FusedSample, got {type(message).__name__}"
    )


@ray.remote
class InferenceActor:
    """The Perceiver on this actor's device (GPU when it was given one, else CPU).

    `infer(sample)` is dynamically batched with concurrent calls (max batch size, max wait);
    `infer_batch(samples)` runs exactly the batch given (replay: fixed batches keep results
    byte-identical from run to run). Both return Predictions once the model has run (they wait
    on it, never on other callers beyond the batch's max wait); a bad sample gets one with
    `error` set instead of failing its batch. `listen` adds a local link for fusers on its node.

    On restart (Ray reconstructs it after it died) the model is loaded again; calls that were in
    flight fail with an actor error and the driver resubmits their samples, its link closes (the
    fuser gives back what it held there) and stays closed until `listen` is called again.
    """

    def __init__(
        self, *, model: ResolvedModel, device: str, max_batch_size: int, max_wait_ms: float, min_score: float
    ) -> None:
        from fusion.inference import InferenceEngine  # here: see the module's docstring

        net = load_model(model)
        self.engine: InferenceEngine = InferenceEngine(
            net, model_version=model.version, device=device, min_score=min_score
        )
        self.engine.warm_up()  # the slow first forward happens now, not on the first sample
        self.metrics = InferenceMetrics(self.engine)
        # One thread runs the model so the event loop keeps accepting samples meanwhile.
        self._executor = ThreadPoolExecutor(max_workers=1)
        self.batcher: DynamicBatcher[FusedSample, Prediction] = DynamicBatcher(
            self._run, max_batch_size=max_batch_size, max_wait_s=max_wait_ms / 1000
        )
        self._server: LinkServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def listen(self) -> tuple[str, str]:
        """Live: open the local link for fusers on this node; returns (node id, socket path).

        A fuser writes a FusedSample to it, and gets back on the same connection `Inferred`,
        or `InferFailed` if the batch raised (`fusion.flow.messages`). The
        sample joins the same dynamic batches as `infer` calls."""
        if self._server is None:
            self._loop = asyncio.get_running_loop()
            self._server = LinkServer(self._on_linked, check=_sample_check, name="inference")
        return ray.get_runtime_context().get_node_id(), self._server.path

    def _on_linked(self, sample: FusedSample, reply: Reply) -> None:
        """On a link's reader thread: into the batcher on the actor's event loop; the answer goes
        back from there when the sample's batch is done."""
        assert self._loop is not None

        def answer(done: Any) -> None:
            try:
                message: LinkReply = Inferred(seq=sample.seq, prediction=done.result())
            except Exception as err:
                message = InferFailed(seq=sample.seq, why=f"{type(err).__name__}: {err}")
            try:
                reply(message)
            except LinkError as err:  # the fuser is gone: it resubmits nothing, as it died too
                log.debug("inference link: %s", err)

        asyncio.run_coroutine_threadsafe(self.batcher.submit(sample), self._loop).add_done_callback(answer)

    async def _run(self, samples: list[FusedSample]) -> list[Prediction]:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self.metrics.timed_predict, samples
        )

    async def infer(self, sample: FusedSample) -> Prediction:
        return await self.batcher.submit(sample)

    async def infer_batch(self, samples: list[FusedSample]) -> list[Prediction]:
        return await self._run(samples)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def info(self) -> InferenceInfo:
        return InferenceInfo(
            device=str(self.engine.device),
            model_version=self.engine.model_version,
            model=self.engine.model.config.name,
            class_names=tuple(self.engine.class_names),
            parameters=sum(p.numel() for p in self.engine.model.parameters()),
            torch_threads=torch_threads(),  # Ray sets it from the actor's num_cpus
            node_id=ray.get_runtime_context().get_node_id(),
            pid=os.getpid(),
        )


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()
