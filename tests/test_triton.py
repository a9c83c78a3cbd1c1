"""Triton: the model repository parses with Triton's own schema; a real tritonserver serves the Python-backend
model to several concurrent clients with the scores of onnxruntime in-process.

The ONNX- and TensorRT-platform repositories cannot run here: the nvidia-pytriton wheel's tritonserver ships only
the Python backend (no onnxruntime or TensorRT backend), so those configs are schema-checked, not served.
"""

from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.layering import assert_runs_without

pytest.importorskip("onnx")


def _model_config(path: Path):
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def dynamic_onnx(private_bundle: Path) -> Path:
    """The bundle's batch-dynamic fp32 ONNX, exported once for this module."""
    from edge_ad.export.onnx_export import export_onnx

    return export_onnx(private_bundle, private_bundle / "model.fp32.onnx", dynamic_batch=True)


def test_onnx_platform_config_parses_with_triton_schema(dynamic_onnx: Path, private_bundle: Path, tmp_path: Path):
    from edge_ad.bundle import read_bundle
    from edge_ad.export.triton import write_triton_repository

    result = write_triton_repository(dynamic_onnx, tmp_path / "repo", max_batch=16)
    config = _model_config(result.config)
    info = read_bundle(private_bundle)
    size = info.image_size
    assert result.model_dir == tmp_path / "repo" / private_bundle.name
    assert config.name == private_bundle.name and config.platform == "onnxruntime_onnx"
    assert (result.model_dir / "1" / "model.onnx").read_bytes() == dynamic_onnx.read_bytes()
    assert config.max_batch_size == 16
    (images,) = config.input
    assert (images.name, list(images.dims)) == ("images", [3, size, size])
    outputs = {o.name: o for o in config.output}
    assert set(outputs) == {"image_score", "anomaly_map", "patch_scores"}
    assert list(outputs["image_score"].dims) == [1] and outputs["image_score"].HasField("reshape")
    assert list(outputs["anomaly_map"].dims) == [size, size]
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert float(params["threshold"]) == pytest.approx(info.threshold, rel=1e-12)
    assert json.loads(params["preprocessing"]) == info.preprocessing.to_dict()
    assert params["onnx_sha256"] == hashlib.sha256(dynamic_onnx.read_bytes()).hexdigest()
    assert params["bundle_weights_sha256"] == info.raw["files"]["model.safetensors"]


def test_tensorrt_and_python_configs_parse(dynamic_onnx: Path, tmp_path: Path):
    from edge_ad.export.triton import write_triton_repository

    engine = tmp_path / "model.fp32.engine"
    engine.write_bytes(b"not a real engine: the config is what is checked")
    plan = write_triton_repository(dynamic_onnx, tmp_path / "trt", engine=engine, max_batch=4)
    config = _model_config(plan.config)
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 4
    assert (plan.model_dir / "1" / "model.plan").read_bytes() == engine.read_bytes()
    assert list(config.dynamic_batching.preferred_batch_size) == [4]
    assert config.parameters["engine_sha256"].string_value == hashlib.sha256(engine.read_bytes()).hexdigest()

    py = write_triton_repository(dynamic_onnx, tmp_path / "py", python_backend=True, name="washer_py")
    config = _model_config(py.config)
    assert config.backend == "python" and not config.platform and config.name == "washer_py"
    assert (py.model_dir / "1" / "model.py").is_file() and (py.model_dir / "1" / "model.onnx").is_file()
    compile((py.model_dir / "1" / "model.py").read_text(), "model.py", "exec")


def test_static_batch_onnx_is_refused(private_bundle: Path, tmp_path: Path):
    from edge_ad.export.onnx_export import export_onnx
    from edge_ad.export.triton import write_triton_repository

    static = export_onnx(private_bundle, tmp_path / "static.onnx", verify=False)
    with pytest.raises(ValueError, match="static batch"):
        write_triton_repository(static, tmp_path / "repo")
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").rglob("config.pbtxt"))


def test_cli_export_triton_needs_out(dynamic_onnx: Path):
    from typer.testing import CliRunner

    from edge_ad.cli.main import app

    result = CliRunner().invoke(app, ["export", str(dynamic_onnx), "--format", "triton"])
    assert result.exit_code == 2 and "--out" in result.output


def test_cli_export_triton_python_backend(private_bundle: Path, tmp_path: Path):
    from typer.testing import CliRunner

    from edge_ad.cli.main import app

    args = ["export", str(private_bundle), "--format", "triton", "--out", str(tmp_path), "--python-backend"]
    result = CliRunner().invoke(app, [*args, "--max-batch", "4"])
    assert result.exit_code == 0, result.output
    config = _model_config(tmp_path / private_bundle.name / "config.pbtxt")
    assert config.backend == "python" and config.max_batch_size == 4
    assert (tmp_path / private_bundle.name / "1" / "model.py").is_file()


def test_parse_target():
    from edge_ad.runtimes.triton_runtime import TritonError, parse_target

    assert parse_target("http://127.0.0.1:8000/washer") == ("http", "127.0.0.1:8000", "washer")
    assert parse_target("http:/127.0.0.1:8000/washer") == ("http", "127.0.0.1:8000", "washer")  # Path-collapsed
    assert parse_target("grpc://gpu-box") == ("grpc", "gpu-box:8001", None)
    assert parse_target("gpu-box:9000", protocol="grpc") == ("grpc", "gpu-box:9000", None)
    with pytest.raises(TritonError):
        parse_target("grpc://h:1/m", protocol="http")
    with pytest.raises(TritonError):
        parse_target("http://h:1/a/b")


def test_triton_runtime_is_torch_free():
    pytest.importorskip("tritonclient.http")
    assert_runs_without(
        "import edge_ad.runtimes.triton_runtime, tritonclient.http, tritonclient.grpc, edge_ad.export.triton_server",
        ["torch"],
    )


def test_unreachable_server_is_one_clear_error():
    pytest.importorskip("tritonclient.http")
    from edge_ad.export.triton_server import free_port
    from edge_ad.runtimes.triton_runtime import TritonError, TritonRuntime

    with pytest.raises(TritonError, match="127.0.0.1"):
        TritonRuntime(f"http://127.0.0.1:{free_port()}/washer", timeout_s=5)


# ---------------------------------------------------------------------------------------------- the real server
@pytest.fixture(scope="module")
def triton_server(dynamic_onnx: Path, tmp_path_factory: pytest.TempPathFactory):
    """tritonserver on loopback serving the exported Python-backend model; always stopped at the end."""
    from edge_ad.export.triton import write_triton_repository
    from edge_ad.export.triton_server import TritonServer, find_tritonserver

    pytest.importorskip("tritonclient.http")
    pytest.importorskip("tritonclient.grpc")
    if find_tritonserver() is None:
        pytest.skip("no tritonserver: pip install --no-deps nvidia-pytriton")
    repo = tmp_path_factory.mktemp("triton_repo")
    write_triton_repository(dynamic_onnx, repo, name="washer", python_backend=True, max_batch=8, intra_op_threads=1)
    server = TritonServer(repo, startup_timeout_s=180)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _demo_batch(tiny_demo: Path, preprocessing) -> tuple[list[str], np.ndarray]:
    from edge_ad.data.images import read_image

    paths = sorted((tiny_demo / "test").glob("*/*.png"))
    assert len(paths) >= 6
    return [str(p) for p in paths], preprocessing.batch([read_image(p) for p in paths])


@pytest.mark.triton
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_real_server_concurrent_clients_match_onnxruntime(
    triton_server, dynamic_onnx: Path, tiny_demo: Path, protocol: str, monkeypatch: pytest.MonkeyPatch
):
    from edge_ad.export.triton_server import metric_values
    from edge_ad.runtimes.onnx_runtime import OnnxRuntime
    from edge_ad.runtimes.triton_runtime import TritonRuntime

    local = OnnxRuntime(dynamic_onnx, threads=1)
    names, batch = _demo_batch(tiny_demo, local.preprocessing)
    ref_score, ref_map = local.predict(batch)
    url = (triton_server.http_url if protocol == "http" else triton_server.grpc_url) + "/washer"
    before = metric_values(triton_server.metrics(), "nv_inference_count").get("washer", 0.0)

    clients, rounds = 4, 2
    requests = [(c, r, i) for c in range(clients) for r in range(rounds) for i in range(len(names))]
    answered: dict[tuple[int, int, int], tuple[float, np.ndarray]] = {}
    lock = threading.Lock()

    def client(c: int) -> None:
        rt = TritonRuntime(url, timeout_s=120)  # one runtime per client, as separate processes would have
        for r in range(rounds):
            for i in range(len(names)):
                score, amap = rt.predict(batch[i : i + 1])
                with lock:
                    answered[(c, r, i)] = (float(score[0]), amap[0])

    with ThreadPoolExecutor(max_workers=clients) as pool:
        futures = [pool.submit(client, c) for c in range(clients)]
        for future in futures:
            future.result(timeout=300)  # bounded: a hung server fails the test instead of blocking it

    assert sorted(answered) == sorted(requests)  # every request answered
    for (_, _, i), (score, amap) in answered.items():
        assert abs(score - float(ref_score[i])) <= 1e-5
        assert float(np.abs(amap - ref_map[i]).max()) <= 1e-5

    # A whole batch in one call (more than max_batch: the runtime chunks) gives the same.
    rt = TritonRuntime(url)
    assert rt.threshold == local.threshold and rt.preprocessing == local.preprocessing
    many = np.concatenate([batch, batch])
    score, amap = rt.predict(many)
    np.testing.assert_allclose(score, np.concatenate([ref_score, ref_score]), atol=1e-5, rtol=0)
    np.testing.assert_allclose(amap, np.concatenate([ref_map, ref_map]), atol=1e-5, rtol=0)

    after = metric_values(triton_server.metrics(), "nv_inference_count").get("washer", 0.0)
    assert after - before == len(requests) + len(many)  # the server saw every image exactly once


@pytest.mark.triton
def test_real_server_through_detector(triton_server, dynamic_onnx: Path, tiny_demo: Path):
    from edge_ad.detector import Detector
    from edge_ad.runtimes.onnx_runtime import OnnxRuntime

    remote = Detector.load(triton_server.http_url.replace("//", "/") + "/washer", backend="triton")
    local = Detector.load(dynamic_onnx, backend="onnxruntime")
    paths = sorted((tiny_demo / "test").glob("*/*.png"))[:4]
    got = remote.predict(paths)
    want = local.predict(paths)
    assert isinstance(local.runtime, OnnxRuntime) and remote.runtime.name == "triton"
    assert [p.verdict for p in got] == [p.verdict for p in want]
    from edge_ad.bench.run import open_bench_runtime as make_runtime

    bench_rt = make_runtime(Path(triton_server.grpc_url + "/washer"), "triton", "fp32", "cpu")  # `edge-ad bench`'s path
    assert bench_rt.name == "triton" and bench_rt.protocol == "grpc"
    np.testing.assert_allclose([p.image_score for p in got], [p.image_score for p in want], atol=1e-5, rtol=0)


def test_stale_repository_is_refused_after_rethreshold(tiny_bundle: Path, tiny_demo: Path, tmp_path: Path, monkeypatch):
    """After `edge-ad threshold`, a repository written before is refused by a client that holds the bundle, and an
    export that would copy a stale ONNX into a new repository refuses too; rewriting it makes it current."""
    import shutil

    from google.protobuf import json_format

    from edge_ad.bundle import BundleError
    from edge_ad.detector import Detector
    from edge_ad.export.onnx_export import export_onnx
    from edge_ad.export.triton import write_triton_repository
    from edge_ad.runtimes.triton_runtime import TritonRuntime
    from edge_ad.thresholds.rethreshold import rethreshold

    bundle = tmp_path / "washer"
    bundle.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy2(tiny_bundle / name, bundle / name)
    onnx_path = export_onnx(bundle, dynamic_batch=True, verify=False)
    repo = write_triton_repository(onnx_path, tmp_path / "repo", python_backend=True)

    def served(self):  # what the server returns for the repository's config.pbtxt (no server needed)
        config = _model_config(repo.config)
        return json_format.MessageToDict(config, preserving_proto_field_name=True)

    monkeypatch.setattr(TritonRuntime, "_config", served)
    url = "http://127.0.0.1:1/washer"
    runtime = TritonRuntime(url)
    assert runtime.parameters["bundle_dir"] == str(bundle.resolve())
    before = runtime.threshold

    rethreshold(bundle, tiny_demo / "train" / "good", sigmas=1.0)
    assert read_threshold(bundle) != pytest.approx(before, rel=1e-6)
    for load in (lambda: TritonRuntime(url), lambda: Detector.load(url, backend="triton")):
        with pytest.raises(BundleError, match=r"edge-ad threshold.*--format triton"):
            load()
    with pytest.raises(BundleError, match="edge-ad threshold"):
        write_triton_repository(onnx_path, tmp_path / "repo2")
    assert not (tmp_path / "repo2").exists()

    repo = write_triton_repository(bundle, tmp_path / "repo", python_backend=True)
    assert TritonRuntime(url).threshold == pytest.approx(read_threshold(bundle), rel=1e-9)


def read_threshold(bundle: Path) -> float:
    from edge_ad.bundle import read_bundle

    return read_bundle(bundle).threshold
