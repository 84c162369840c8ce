"""StyleCLIP random samples (task `styleclip-sample`): one generator pass from a seeded z, truncated towards the
mean w as StyleCLIP's random starts are (`run_optimization.py --truncation 0.7`). The sample's latent starts an
edit (`SampleOutput.as_start`)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from pipelines.registry import register
from pipelines.styleclip_core import SampleConfig, Start, StyleCLIPTaskPipeline
from studio.images import to_pil
from studio.progress import Progress, Result
from studio.runner import drain
from studio.scorer import oom_guard
from studio.tasks import Task, resolve, run_settings


@dataclass
class SampleOutput(Result):
    """A random sample: `image` (PIL) of `latent` (1, n_latent, D), from `seed` and the truncation."""

    task = "styleclip-sample"
    latent: torch.Tensor | None = None

    def as_start(self, device: torch.device) -> Start:
        return Start(self.latent.to(device))


class StyleCLIPSamplePipeline(StyleCLIPTaskPipeline):
    """A random sample to edit, on a StyleCLIP session. `sample_config`: the defaults (`SampleConfig`)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.sample_config = SampleConfig()

    def iter_sample(self, **settings: Any) -> Iterator[Progress | SampleOutput]:
        """One step (the image as its preview), then the `SampleOutput`. settings: `SampleConfig` fields (seed,
        truncation). A "stop" sent at the step marks the result stopped; the sample is already whole."""
        t0 = time.perf_counter()
        # 1. check inputs
        cfg = resolve(self.sample_config, settings)
        # 2. one generator pass
        with oom_guard("StyleCLIP sampling"), torch.no_grad():
            latent = self.session.random_latent(**dataclasses.asdict(cfg))
            image = to_pil(self.session.to_unit(self.session.render(latent)))
        stopped = (yield Progress(1, 1, image, {})) == "stop"
        # 3. package
        yield SampleOutput(image=image, latent=latent.cpu(), seed=cfg.seed, settings=run_settings(cfg),
                           timings={"total_s": time.perf_counter() - t0}, stopped=stopped, steps_run=1,
                           notice=self.session.scorer.notice)

    def sample(self, *, callback: Callable | None = None, **settings: Any) -> SampleOutput:
        """A random sample to edit (one generator pass). settings: `SampleConfig` fields (seed, truncation)."""
        return drain(self.iter_sample(**settings), callback)

    __call__ = sample


register(Task(name="styleclip-sample", title="Random sample (StyleCLIP)", config=SampleConfig,
              pipeline=StyleCLIPSamplePipeline, method="iter_sample", models=("generator", "clip"),
              load=StyleCLIPSamplePipeline.from_pretrained,
              inputs=()))

__all__ = ["SampleOutput", "StyleCLIPSamplePipeline"]
