"""A third model family added the way the family table promises: one folder and one registration line.

The test writes a tiny family (a graph that scores the distance to the mean good image, and a trainer that computes
that mean) into a temporary folder that edge-ad knows nothing about, registers its ``Family`` record in the table
with one line, and runs it through ``edge-ad train``, evaluation, the ONNX export and the HTTP service, with no edit
to edge-ad itself.
"""

from __future__ import annotations

import importlib
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

STUB_FILES = {
    "__init__.py": '"""A stub anomaly-detection family for the tests: distance to the mean good image."""\n',
    "model.py": '''
        """The stub's torch model and its fused inference graph."""

        from __future__ import annotations

        from dataclasses import asdict, dataclass
        from typing import Any

        import torch
        import torch.nn.functional as F
        from torch import nn


        @dataclass
        class StubConfig:
            pool: int = 4

            def to_dict(self) -> dict[str, Any]:
                return asdict(self)

            @classmethod
            def from_dict(cls, raw: dict[str, Any]) -> StubConfig:
                return cls(**raw)


        class StubGraph(nn.Module):
            image_score = "max"
            smoothing_sigma = 0.0
            int8_layout = {"parts": {"all": ["/*"]}, "recipes": {"all": []}}

            def __init__(self, model: StubModel):
                super().__init__()
                self.model = model

            def patch_scores(self, images: torch.Tensor) -> torch.Tensor:
                diff = (images - self.model.mean).abs().sum(dim=1, keepdim=True)
                return F.avg_pool2d(diff, self.model.config.pool)

            def head(self, patch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                size = (self.model.image_size, self.model.image_size)
                amap = F.interpolate(patch, size=size, mode="bilinear", align_corners=False)[:, 0]
                return amap.amax(dim=(1, 2)), amap

            def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
                patch = self.patch_scores(images)
                score, amap = self.head(patch)
                return score, amap, patch


        class StubModel(nn.Module):
            family = "stub"

            def __init__(self, config: StubConfig, image_size: int):
                super().__init__()
                self.config, self.image_size = config, image_size
                self.mean = nn.Parameter(torch.zeros(1, 3, image_size, image_size), requires_grad=False)

            def inference_graph(self) -> StubGraph:
                return StubGraph(self)
    ''',
    "trainer.py": '''
        """The stub's trainer: the mean good image, then the threshold from the good images' own scores."""

        from __future__ import annotations

        from pathlib import Path
        from typing import Any

        import numpy as np
        import torch

        from edge_ad.data.images import read_image
        from edge_ad.data.layout import resolve_category, train_images
        from edge_ad.runtimes.scoring import score_batches
        from edge_ad.runtimes.torch_runtime import TorchRuntime
        from edge_ad.thresholds.rules import good_statistics
        from edge_ad.training.finish import save_model
        from stubfam.model import StubConfig, StubModel


        def train_stub(data: Path, out_dir: Path, preprocessing: Any, category: str | None) -> Path:
            paths = train_images(resolve_category(data, category))
            batch = preprocessing.batch([read_image(p) for p in paths])
            model = StubModel(StubConfig(), preprocessing.image_size)
            with torch.no_grad():
                model.mean.copy_(torch.from_numpy(batch.mean(axis=0, keepdims=True)))
            scores, maps = score_batches(TorchRuntime(model).predict, list(batch))
            stats = good_statistics(scores, maps, 3.0)
            stats["threshold_source"] = f"{len(paths)} training images"
            return save_model(
                model,
                out_dir,
                preprocessing=preprocessing,
                threshold=stats["image"]["threshold"],
                score_stats=stats,
                backbone={},
                training={"data": str(data), "train_images": [p.name for p in paths]},
            )
    ''',
    "family.py": '''
        """The stub's Family record (torch-free to import)."""

        from __future__ import annotations

        from edge_ad.models.family import Family
        from edge_ad.postprocess.image_score import HeadDeclaration


        def build(info):
            from stubfam.model import StubConfig, StubModel

            return StubModel(StubConfig.from_dict(info.model), image_size=info.image_size)


        def train(data, out_dir, preprocessing, common, options, run):
            from stubfam.trainer import train_stub

            train_stub(data, out_dir, preprocessing, run["category"])


        FAMILY = Family(name="stub", title="Stub", build=build, train=train, head=HeadDeclaration("max", 0.0))
    ''',
}


@pytest.fixture
def stub_family(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = tmp_path / "families" / "stubfam"
    folder.mkdir(parents=True)
    for name, text in STUB_FILES.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip())
    monkeypatch.syspath_prepend(str(folder.parent))
    importlib.invalidate_caches()
    from edge_ad.models.families import FAMILIES

    family = importlib.import_module("stubfam.family").FAMILY
    monkeypatch.setitem(FAMILIES, family.name, family)  # the one registration line
    return family


def test_a_stub_family_trains_evaluates_exports_and_serves(
    stub_family, tiny_demo: Path, tmp_path: Path
) -> None:
    pytest.importorskip("starlette")
    from edge_ad.cli.main import app
    from edge_ad.detector import Detector
    from edge_ad.evaluation.evaluate import evaluate_model
    from edge_ad.export import export
    from edge_ad.postprocess.image_score import HeadDeclaration
    from edge_ad.serve.service import ServeConfig, build_service
    from tests.serve_http import post_image, running_app

    bundle = tmp_path / "stub-washer"
    args = ["train", str(tiny_demo), "--out", str(bundle), "--model", "stub", "--image-size", "64", "--resize", "64"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    refused = CliRunner().invoke(app, [*args, "--preset", "paper"])  # another family's option, named as such
    assert refused.exit_code == 2 and "NSA options" in refused.output

    from edge_ad.models.registry import load_model

    model, info = load_model(bundle)
    assert info.family == "stub" and type(model).__name__ == "StubModel"
    assert HeadDeclaration.of_graph(model.inference_graph()) == stub_family.head

    report = evaluate_model(bundle, tiny_demo, backend="torch")
    overall = report["metrics"]["overall"]
    assert 0.0 <= overall["image_auroc"] <= 1.0 and report["backend"] == "torch"

    onnx_path = export(bundle, "onnx", "fp32").path
    assert onnx_path == bundle / "model.fp32.onnx" and onnx_path.is_file()
    detector = Detector.load(onnx_path)
    assert detector.runtime.family == "stub"
    onnx_report = evaluate_model(onnx_path, tiny_demo, backend="onnxruntime")["metrics"]["overall"]
    assert onnx_report["image_auroc"] == pytest.approx(overall["image_auroc"], abs=1e-6)

    image = sorted((tiny_demo / "test").rglob("*.png"))[0]
    expected = detector.predict(image)[0]
    service = build_service(ServeConfig(model=onnx_path, out=tmp_path / "served"), detector=detector)
    service.start()
    try:
        with running_app(service.app) as port:
            ok, encoded = cv2.imencode(".png", cv2.imread(str(image)))
            assert ok
            status, _, body = post_image(port, encoded.tobytes())
    finally:
        assert service.shutdown()
    assert status == 200, body
    assert body["image_score"] == pytest.approx(expected.image_score, rel=1e-5)
    assert body["verdict"] == expected.verdict
    assert np.isfinite(body["image_score"])
