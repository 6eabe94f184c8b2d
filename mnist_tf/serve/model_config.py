"""TF Serving's `--model_config_file`: which models to serve, from which folders, which versions, which labels.

The file is a `ModelServerConfig` in protobuf text format (tensorflow_serving/config/model_server_config.proto),
as `mnist-tf export` writes it beside the versions (OUT/saved_model/models.config):

    model_config_list {
      config {
        name: "mnist"
        base_path: "/models/mnist"
        model_platform: "tensorflow"
        model_version_policy { latest { num_versions: 2 } }   # or specific { versions: 1 versions: 3 }, or all {}
        version_labels { key: "stable" value: 1 }
      }
    }

A relative `base_path` is read from the file's own folder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mnist_tf.core.contract import MODEL_NAME
from mnist_tf.core.errors import UserError

EXAMPLE = 'model_config_list { config { name: "mnist" base_path: "mnist" model_platform: "tensorflow" } }'


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """One model of the config: its name, the folder of its numbered versions, which versions serve, its labels."""

    name: str
    base: Path
    policy: str = "latest"  # "latest", "specific" or "all"
    num_versions: int = 1  # latest's
    versions: tuple[int, ...] = ()  # specific's
    labels: tuple[tuple[str, int], ...] = ()

    def wanted(self, on_disk: Sequence[int]) -> list[int]:
        """The versions to serve, of those on disk (ascending)."""
        if self.policy == "all":
            return list(on_disk)
        if self.policy == "specific":
            return [v for v in on_disk if v in self.versions]
        return list(on_disk[-self.num_versions :])

    def label(self, label: str) -> int | None:
        return dict(self.labels).get(label)


def single_model(base: Path, name: str = MODEL_NAME) -> list[ModelSource]:
    """`--model BASE`: one model, its newest version, as TF Serving's --model_base_path."""
    return [ModelSource(name, Path(base))]


def read_model_config(path: Path) -> list[ModelSource]:
    """The models of a config file; UserError, in one line naming the problem, for a file that is not one."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file: pass the model config file's path") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read it ({e}): pass a readable text file") from None
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
        return model_sources(config, path.parent)
    except (text_format.ParseError, ValueError) as e:
        problem = f"not a model config ({' '.join(str(e).split())})" if isinstance(e, text_format.ParseError) else e
        raise UserError(f"{path}: {problem}; write TF Serving's text format, e.g. {EXAMPLE}") from None


def model_sources(config: Any, folder: Path) -> list[ModelSource]:
    """The models of a ModelServerConfig proto, relative base_paths read from `folder`; ValueError naming
    what is wrong with it."""
    if config.WhichOneof("config") != "model_config_list" or not config.model_config_list.config:
        raise ValueError("it lists no models (no model_config_list with a config)")
    sources: list[ModelSource] = []
    for entry in config.model_config_list.config:
        if not entry.name or not entry.base_path:
            raise ValueError("every config needs a name and a base_path")
        if entry.name in {s.name for s in sources}:
            raise ValueError(f"model {entry.name} is named twice")
        if entry.model_platform not in ("", "tensorflow"):
            raise ValueError(
                f'model {entry.name} has model_platform "{entry.model_platform}": only "tensorflow" serves'
            )
        policy = entry.model_version_policy.WhichOneof("policy_choice") or "latest"
        versions = tuple(sorted(set(entry.model_version_policy.specific.versions)))
        if policy == "specific" and not versions:
            raise ValueError(f"model {entry.name}'s specific version policy names no versions")
        base = Path(entry.base_path)
        sources.append(
            ModelSource(
                name=entry.name,
                base=base if base.is_absolute() else folder / base,
                policy=policy,
                num_versions=max(1, entry.model_version_policy.latest.num_versions),
                versions=versions,
                labels=tuple(sorted(entry.version_labels.items())),
            )
        )
    return sources
