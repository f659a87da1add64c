"""The model build's own steps that need no training run."""

from __future__ import annotations

from pathlib import Path


def test_a_build_drops_what_an_earlier_build_left_and_it_will_not_write(tmp_path: Path):
    from export.build import BuildOptions, drop_stale_outputs

    for f in ("model.int8.onnx", "model.int8.json", "model.opt.onnx", "model.onnx"):
        (tmp_path / f).write_text("old")
    drop_stale_outputs(tmp_path, BuildOptions(out_dir=tmp_path))  # quantises by default
    assert (tmp_path / "model.int8.onnx").is_file()  # about to be written anew
    drop_stale_outputs(tmp_path, BuildOptions(out_dir=tmp_path, quantize=False))
    assert sorted(f.name for f in tmp_path.iterdir()) == ["model.onnx"]
