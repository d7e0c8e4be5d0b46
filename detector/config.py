"""The run configuration: OmegaConf resolvers, and the check that the composed choices fit together.

`check_combination` runs when `train.py` starts, before any data is read. It reads only what the classes named by
the config declare (a model's `output_type`, a criterion's `head_output` and `takes_dfl`, a classification loss's
`activation`, a distance loss's `needs_bins` against `model.reg_max`, the fields of a head output), never a class or
module name, and names the valid options of the group that does not fit.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from detector.sweeps import register_resolver as register_sweep_resolvers

# torch and the modules that import it are imported inside the functions that use them: composing a config
# (`python train.py --cfg job`) needs neither


class ConfigError(ValueError):
    """The composed config chooses parts that cannot work together."""


# renamed config options, (group, old option) -> new option: the old config stays as an alias that composes the new
# one, and a run that selects it warns once (`renamed_choices`), for a deprecation period (December 2026)
RENAMED_CHOICES = {("criterion", "yolo"): "yolov8", ("loss", "ciou"): "yolov8"}


def renamed_choices(choices: Mapping[str, Any]) -> list[str]:
    """One deprecation message per renamed option among Hydra's `runtime.choices` (group -> chosen option)."""
    return [f"{group}={option} is deprecated: it is now {group}={RENAMED_CHOICES[group, option]} (the same config)"
            for group, option in choices.items() if (group, option) in RENAMED_CHOICES]


def auto_precision() -> str:
    """Lightning precision for the visible hardware: bf16-mixed or 16-mixed on GPU, 32-true on CPU."""
    import torch

    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def loss_activation(target: str) -> str:
    """`${loss_activation:${loss.cls._target_}}`: the activation a classification loss declares (sigmoid/softmax)."""
    return hydra.utils.get_class(target).activation


def dataset_num_classes(root: str, class_names: Any = None) -> int:
    """`${dataset_num_classes:${.root},${.class_names}}`: the class count of the dataset in `root` (data=auto).

    Finding it may read every annotation file (VOC xml), and a config resolves `data.num_classes` once per node
    that refers to it, so the count is cached per process by folder and class names; the data module's setup
    compares it with the data it reads (a dataset changed meanwhile is an error there, not a wrong model)."""
    names = None if class_names is None else tuple(str(n) for n in class_names)
    return _cached_class_count(str(Path(root).expanduser().resolve()), names)


@functools.cache
def _cached_class_count(root: str, class_names: tuple[str, ...] | None) -> int:
    from detector.data.layout import dataset_num_classes as count

    return count(root, class_names)


def register_resolvers() -> None:
    for name, resolver in (("auto_precision", auto_precision), ("loss_activation", loss_activation),
                           ("dataset_num_classes", dataset_num_classes)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
    register_sweep_resolvers()  # offset_job_num, resume_seed (Hydra's sweep settings)


def project_root() -> Path:
    """$PROJECT_ROOT, else the folder that holds the package (the repository, for an editable install)."""
    root = os.environ.get("PROJECT_ROOT")
    return Path(root) if root else Path(__file__).resolve().parents[1]


def config_dir() -> Path:
    """The configs/ folder of the project; FileNotFoundError, saying what to do, when there is none."""
    configs = project_root() / "configs"
    if not configs.is_dir():
        raise FileNotFoundError(
            f"no configs folder at {configs}: the detector commands compose the configs of the repository. "
            "Install the repository in editable mode (pip install -e <repository>) or set PROJECT_ROOT=<repository>."
        )
    return configs


def compose(config_name: str = "train", overrides: Sequence[str] = (), return_hydra_config: bool = False,
            configs: Path | None = None) -> DictConfig:
    """configs/<config_name>.yaml composed with `overrides`, as the command of that config sees it (Hydra's compose
    API, resolvers registered); `configs`: another configs folder (default: `config_dir()`)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_resolvers()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(configs or config_dir()), version_base="1.3"):
            return hydra_compose(config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)
    finally:
        GlobalHydra.instance().clear()


def group_options(group: str) -> dict[str, type]:
    """option name -> the class its `_target_` names, for the configs of a group (e.g. "criterion", "loss/cls")."""
    options = {}
    for path in sorted((config_dir() / group).glob("*.yaml")):
        target = OmegaConf.load(path).get("_target_")
        if target:
            options[path.stem] = hydra.utils.get_class(target)
    return options


def _target(node: Any) -> type | None:
    target = OmegaConf.select(node, "_target_", default=None) if isinstance(node, DictConfig) else None
    return hydra.utils.get_class(target) if target else None


def check_combination(cfg: DictConfig) -> None:
    """Raise ConfigError when the model, criterion and losses of `cfg` cannot be trained together."""
    model, criterion, cls_loss = (_target(OmegaConf.select(cfg, key)) for key in ("model", "criterion", "loss.cls"))
    if model is None or criterion is None:
        return
    head_output = model.output_type
    if not issubclass(head_output, criterion.head_output):
        valid = [name for name, c in group_options("criterion").items() if issubclass(head_output, c.head_output)]
        raise ConfigError(
            f"{criterion.__name__} trains {criterion.head_output.__name__}, but {model.__name__} outputs "
            f"{head_output.__name__}: choose criterion={' or criterion='.join(valid)} (a model config selects its own)"
        )
    if cls_loss is not None and cls_loss.activation not in head_output.activations:
        valid = [name for name, c in group_options("loss/cls").items() if c.activation in head_output.activations]
        raise ConfigError(
            f"{cls_loss.__name__} needs {cls_loss.activation} class logits, which {model.__name__} ({head_output.__name__}) "
            f"does not give ({', '.join(head_output.activations)}): choose loss/cls={','.join(valid)}"
        )
    if OmegaConf.select(cfg, "loss.dfl") is not None and not criterion.takes_dfl:
        raise ConfigError(
            f"{criterion.__name__} has no DFL term ({head_output.__name__} regresses offsets, it has no distribution "
            "bins): choose loss/dfl=none"
        )
    distance_loss, reg_max = _target(OmegaConf.select(cfg, "loss.dfl")), OmegaConf.select(cfg, "model.reg_max")
    if distance_loss is not None and reg_max is not None:
        from detector.losses.dfl import distance_loss_mismatch

        mismatch = distance_loss_mismatch(distance_loss, int(reg_max))
        if mismatch:
            valid = [name for name, c in group_options("loss/dfl").items() if not distance_loss_mismatch(c, int(reg_max))]
            raise ConfigError(f"{mismatch}: choose loss/dfl={' or loss/dfl='.join(valid)} (or loss/dfl=none)")
    if OmegaConf.select(cfg, "model.end2end", default=False) and "one2one" not in head_output._fields:
        raise ConfigError(
            f"{model.__name__} has no one-to-one branch ({head_output.__name__}): model.end2end works with "
            "model=yolov8 (the DFL head)"
        )
