"""``classifier.category_model.exemplars`` at start-up: what it loads, what it refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from router_svc.classify.exemplars import FILE_NAME, Exemplars
from router_svc.config.loading import EXAMPLE_CONFIG, ConfigError, parse_config
from router_svc.flow.runtime import open_exemplars
from router_svc.labels import CATEGORIES, PII_TAGS
from router_svc.triton.client import ModelInfo

INFO = ModelInfo("m", tuple(CATEGORIES), tuple(PII_TAGS), 256, 32, embedding_dim=4)


def write(path: Path, categories=tuple(CATEGORIES), dim: int = 4) -> Path:
    n = len(categories)
    Exemplars(np.eye(n, dim, dtype=np.float32) + 0.01, np.eye(n, dtype=np.float32),
              tuple(categories)).save(path)
    return path


def test_auto_takes_the_builds_file_or_none(tmp_path: Path) -> None:
    assert open_exemplars("auto", tmp_path, INFO) is None
    write(tmp_path / FILE_NAME)
    ex = open_exemplars("auto", tmp_path, INFO)
    assert ex is not None and len(ex.vectors) == len(CATEGORIES)
    assert open_exemplars("off", tmp_path, INFO) is None


@pytest.mark.parametrize("make, expected", [
    (lambda p: p / "missing.npz", "is not a file"),
    (lambda p: write(p / "other.npz", categories=("a", "b")), "categories"),
    (lambda p: write(p / "small.npz", dim=3), "embedding has 4"),
])
def test_a_named_file_that_does_not_fit_is_a_config_error(tmp_path: Path, make,
                                                          expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as e:
        open_exemplars(str(make(tmp_path)), tmp_path, INFO)
    assert "classifier.category_model.exemplars" in str(e.value)


def test_a_relative_path_is_read_from_the_config_files_folder(tmp_path: Path) -> None:
    data = yaml.safe_load(Path(EXAMPLE_CONFIG).read_text())
    data["classifier"]["category_model"]["exemplars"] = "model/ex.npz"
    config = parse_config(data, tmp_path)
    assert config.classifier.category_model.exemplars == str(tmp_path / "model/ex.npz")
