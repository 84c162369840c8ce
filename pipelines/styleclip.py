"""StyleCLIP: text-driven editing of a StyleGAN2 latent with CLIP (Patashnik et al., ICCV 2021).

`StyleCLIPPipeline` is the one-object entry point: a StyleCLIP session (pipelines/styleclip_core.py: the generator,
CLIP, precision, encoder and relevance caches) with every task's pipeline on it, so that a sample, an inversion, an
edit and a global direction share one generator, one CLIP and one relevance cache. It only composes; each task is
its own file, pipeline class and registration:

* pipelines/styleclip_sample.py: random samples (`styleclip-sample`);
* pipelines/styleclip_edit.py: latent optimisation (`styleclip-edit`; the paper's Sec. 4);
* pipelines/styleclip_invert.py: a real image to W+ (`styleclip-invert`, after rosinality's `projector.py`);
* pipelines/styleclip_global.py: channel relevance and global directions (`styleclip-relevance`,
  `styleclip-global`; the paper's Sec. 6);
* pipelines/styleclip_mapper.py: the latent mapper (`styleclip-mapper`, `styleclip-mapper-apply`; Sec. 5).

On the run protocol (`studio.progress`): the `iter_*` methods yield a `Progress` every step and end with their
result; send "stop" to end early with the best so far. `sample`, `edit`, `global_direction`, `invert`,
`channel_relevance`, `train_mapper` and `apply_mapper` drain them. Settings and their limits are the config
dataclasses (`SampleConfig`, `EditConfig`, `GlobalDirectionConfig`, `InvertConfig`, `RelevanceConfig`,
`MapperConfig`, `MapperApplyConfig`), held as `sample_config`, `edit_config`, ... .
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from pipelines.styleclip_core import (
    EditOutput,
    SampleConfig,
    StartConfig,
    StyleCLIPSession,
    StyleCLIPTaskPipeline,
    get_lr,
)
from pipelines.styleclip_edit import EditConfig, LatentEditOutput, StyleCLIPEditPipeline
from pipelines.styleclip_global import (
    ChannelRelevance,
    GlobalDirectionConfig,
    GlobalDirectionOutput,
    RelevanceConfig,
    RelevanceOutput,
    StyleCLIPGlobalPipeline,
)
from pipelines.styleclip_invert import InversionOutput, InvertConfig, StyleCLIPInvertPipeline, noise_regularize
from pipelines.styleclip_mapper import (
    LatentMapper,
    MapperApplyConfig,
    MapperConfig,
    MapperEditOutput,
    MapperTrainOutput,
    StyleCLIPMapperPipeline,
)
from pipelines.styleclip_sample import SampleOutput, StyleCLIPSamplePipeline
from studio.progress import Progress


def _config(task: str, name: str) -> property:
    """The config `name` of the task pipeline `task`, read and set through."""
    return property(lambda self: getattr(getattr(self, task), name),
                    lambda self, value: setattr(getattr(self, task), name, value),
                    doc=f"the defaults of `{task}` (settings override them per call)")


class StyleCLIPPipeline(StyleCLIPTaskPipeline):
    """Text-driven StyleGAN editing, every StyleCLIP task on one session. `generator`: a `studio.generators`
    generator; `scorer`: a `CLIPScorer`; `precision`, `cache_dir`: as `StyleCLIPSession`'s.

    >>> pipe = StyleCLIPPipeline.from_pretrained("demo-shapes")  # doctest: +SKIP
    >>> out = pipe.edit(None, "a red circle", num_steps=100, seed=3)  # doctest: +SKIP
    >>> out.save("red/")  # styleclip-edit.png (settings inside), styleclip-edit.mp4  # doctest: +SKIP
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.sampling = StyleCLIPSamplePipeline.from_pipe(self)
        self.editing = StyleCLIPEditPipeline.from_pipe(self)
        self.inversion = StyleCLIPInvertPipeline.from_pipe(self)
        self.directions = StyleCLIPGlobalPipeline.from_pipe(self)
        self.mapping = StyleCLIPMapperPipeline.from_pipe(self)

    sample_config = _config("sampling", "sample_config")
    edit_config = _config("editing", "edit_config")
    invert_config = _config("inversion", "invert_config")
    relevance_config = _config("directions", "relevance_config")
    global_config = _config("directions", "global_config")
    mapper_config = _config("mapping", "mapper_config")
    mapper_apply_config = _config("mapping", "mapper_apply_config")

    # -- samples ----------------------------------------------------------------------------------------------

    def iter_sample(self, **settings: Any) -> Iterator[Progress | SampleOutput]:
        return self.sampling.iter_sample(**settings)

    def sample(self, *, callback: Callable | None = None, **settings: Any) -> SampleOutput:
        """A random sample to edit (one generator pass). settings: `SampleConfig` fields (seed, truncation)."""
        return self.sampling.sample(callback=callback, **settings)

    # -- latent optimisation ----------------------------------------------------------------------------------

    def iter_edit(self, latent_or_image: Any = None, prompt: str = "", **settings: Any
                  ) -> Iterator[Progress | LatentEditOutput]:
        """`StyleCLIPEditPipeline.iter_edit`: optimise a W+ latent towards `prompt`."""
        return self.editing.iter_edit(latent_or_image, prompt, **settings)

    def edit(self, latent_or_image: Any = None, prompt: str = "", *, callback: Callable | None = None,
             **settings: Any) -> LatentEditOutput:
        """Run `iter_edit(latent_or_image, prompt, **settings)` to the end; `callback(step, total, preview)`
        returning False stops it (the result is then the best latent so far)."""
        return self.editing.edit(latent_or_image, prompt, callback=callback, **settings)

    def __call__(self, latent_or_image: Any = None, prompt: str = "", **kwargs: Any) -> LatentEditOutput:
        """The studio's pipeline entry point: latent optimisation (`edit`)."""
        return self.edit(latent_or_image, prompt, **kwargs)

    # -- inversion --------------------------------------------------------------------------------------------

    def iter_invert(self, image: Any, **settings: Any) -> Iterator[Progress | InversionOutput]:
        """`StyleCLIPInvertPipeline.iter_invert`: project `image` into W+."""
        return self.inversion.iter_invert(image, **settings)

    def invert(self, image: Any, *, callback: Callable | None = None, **settings: Any) -> InversionOutput:
        """Run `iter_invert(image, **settings)` to the end (a stop keeps the best iterate so far)."""
        return self.inversion.invert(image, callback=callback, **settings)

    # -- channel relevance and global directions --------------------------------------------------------------

    def iter_relevance(self, **settings: Any) -> Iterator[Progress | RelevanceOutput]:
        """`StyleCLIPGlobalPipeline.iter_relevance`: each StyleSpace channel's CLIP direction, cached."""
        return self.directions.iter_relevance(**settings)

    def channel_relevance(self, *, callback: Callable | None = None, **settings: Any) -> RelevanceOutput:
        """Run `iter_relevance(**settings)` to the end; the `ChannelRelevance` is the result's `relevance`."""
        return self.directions.channel_relevance(callback=callback, **settings)

    def cached_relevance(self, cfg: RelevanceConfig) -> ChannelRelevance | None:
        return self.directions.cached_relevance(cfg)

    def channel_std(self, **settings: Any) -> torch.Tensor:
        return self.directions.channel_std(**settings)

    def fs3_layout(self) -> str:
        return self.directions.fs3_layout()

    def import_directions(self, source: Any, **settings: Any) -> ChannelRelevance:
        """`StyleCLIPGlobalPipeline.import_directions`: use StyleCLIP's published `fs3.npy`."""
        return self.directions.import_directions(source, **settings)

    def published_file(self) -> Any:
        return self.directions.published_file()

    def published_directions(self, required: bool = False) -> ChannelRelevance | None:
        return self.directions.published_directions(required)

    def text_direction(self, neutral: str, target: str, templates: str | list[str] | None = None) -> torch.Tensor:
        return self.directions.text_direction(neutral, target, templates)

    style_direction = staticmethod(StyleCLIPGlobalPipeline.style_direction)

    def iter_global_direction(self, latent_or_image: Any = None, neutral: str = "", target: str = "",
                              **settings: Any) -> Iterator[Progress | GlobalDirectionOutput]:
        """`StyleCLIPGlobalPipeline.iter_global_direction`: edit along the direction from `neutral` to `target`."""
        return self.directions.iter_global_direction(latent_or_image, neutral, target, **settings)

    def global_direction(self, latent_or_image: Any = None, neutral: str = "", target: str = "", *,
                         callback: Callable | None = None, **settings: Any) -> GlobalDirectionOutput:
        """Run `iter_global_direction(...)` to the end; `callback(step, total, preview)` returning False stops it."""
        return self.directions.global_direction(latent_or_image, neutral, target, callback=callback, **settings)

    # -- the latent mapper -----------------------------------------------------------------------------------

    @property
    def mapper(self) -> LatentMapper | None:
        """The mapper `apply_mapper` uses when none is given (`load_mapper`)."""
        return self.mapping.mapper

    def load_mapper(self, mapper: Any) -> LatentMapper:
        """`StyleCLIPMapperPipeline.load_mapper`: a mapper for this generator, the default of `apply_mapper`."""
        return self.mapping.load_mapper(mapper)

    def iter_train_mapper(self, prompt: str = "", **settings: Any) -> Iterator[Progress | MapperTrainOutput]:
        """`StyleCLIPMapperPipeline.iter_train_mapper`: train a latent mapper for `prompt`."""
        return self.mapping.iter_train_mapper(prompt, **settings)

    def train_mapper(self, prompt: str = "", *, callback: Callable | None = None, **settings: Any
                     ) -> MapperTrainOutput:
        """Run `iter_train_mapper(prompt, **settings)` to the end (a stop keeps the mapper trained so far)."""
        return self.mapping.train_mapper(prompt, callback=callback, **settings)

    def iter_apply_mapper(self, latent_or_image: Any = None, mapper: Any = None, **settings: Any
                          ) -> Iterator[Progress | MapperEditOutput]:
        """`StyleCLIPMapperPipeline.iter_apply_mapper`: edit a latent with a trained mapper in one pass."""
        return self.mapping.iter_apply_mapper(latent_or_image, mapper, **settings)

    def apply_mapper(self, latent_or_image: Any = None, mapper: Any = None, *, callback: Callable | None = None,
                     **settings: Any) -> MapperEditOutput:
        """Run `iter_apply_mapper(latent_or_image, mapper, **settings)` to the end."""
        return self.mapping.apply_mapper(latent_or_image, mapper, callback=callback, **settings)

    # -- the one-class pipeline's internals, kept for the benchmarks and tests written against it ---------------

    def _autocast(self):
        return self.session.autocast()

    def _clip_embed(self, img: torch.Tensor) -> torch.Tensor:
        return self.session.clip_embed(img)

    def _clip_features(self, img: torch.Tensor, layers: tuple[int, ...]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.session.clip_features(img, layers)

    def _base_styles(self, z: torch.Tensor) -> list[torch.Tensor]:
        return self.directions._base_styles(z)

    def _jacobian_directions(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.directions._jacobian_directions(*args, **kwargs)

    def _finite_directions(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.directions._finite_directions(*args, **kwargs)


__all__ = ["ChannelRelevance", "EditConfig", "EditOutput", "GlobalDirectionConfig", "GlobalDirectionOutput",
           "InversionOutput", "InvertConfig", "LatentEditOutput", "LatentMapper", "MapperApplyConfig", "MapperConfig",
           "MapperEditOutput", "MapperTrainOutput", "RelevanceConfig", "RelevanceOutput", "SampleConfig",
           "SampleOutput", "StartConfig", "StyleCLIPMapperPipeline", "StyleCLIPPipeline", "StyleCLIPSession", "get_lr",
           "noise_regularize"]
