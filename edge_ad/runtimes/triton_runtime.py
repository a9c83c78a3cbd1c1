"""Triton Inference Server client backend (``--backend triton``): ``Runtime.predict`` over HTTP or gRPC. Torch-free.

Preprocessing stays edge-ad's own, on the client: the server receives the normalised ``images`` batch and returns
``image_score`` and ``anomaly_map``. The threshold, preprocessing and score statistics come from the served model's
config ``parameters`` (written by ``edge-ad export --format triton``), so a remote model decides like a local one.
When those parameters name a bundle (``bundle_dir``) that this machine holds, the served model must be current
there (:func:`edge_ad.bundle.check_artifact_current`: same weights, and the bundle's threshold after ``edge-ad
threshold``); a stale repository is refused with the command that rewrites it. Without the bundle here (a remote
client) there is nothing to compare with, and the served parameters are used as they are.

Targets: ``http://HOST:PORT[/MODEL]`` or ``grpc://HOST:PORT[/MODEL]`` (a single slash after the scheme is accepted,
since a command-line path argument collapses ``//``); without a model name the server's one edge-ad model is used.
One client per thread (tritonclient's clients are not meant to be shared between threads), so one runtime can
be called from several threads at once.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.artifacts import INPUT_NAME, OUTPUT_NAMES, ArtifactInfo
from edge_ad.bundle import CONFIG_NAME, BundleError, check_artifact_current
from edge_ad.extras import EXTRA_BY_NAME, missing_extra_message
from edge_ad.runtimes.base import check_batch

__all__ = ["TritonError", "TritonRuntime", "parse_target"]

PROTOCOLS = ("http", "grpc")
_TARGET = re.compile(r"^(?:(?P<scheme>https?|grpc)s?:/+)?(?P<host>[^/\s]+?)(?:/(?P<model>[^/\s]+))?/?$")


class TritonError(ValueError):
    """The Triton server cannot be reached, or does not serve an edge-ad model as expected."""


def parse_target(target: str, protocol: str | None = None) -> tuple[str, str, str | None]:
    """``(protocol, "host:port", model or None)`` of ``http://host:8000/name``, ``grpc://host:8001``, ``host``."""
    match = _TARGET.match(str(target).strip())
    if match is None:
        raise TritonError(f"not a Triton address: {target!r}; use http://HOST:PORT[/MODEL] or grpc://HOST:PORT[/MODEL]")
    scheme = match["scheme"] or protocol or "http"
    scheme = "http" if scheme.startswith("http") else scheme
    if protocol is not None and protocol != scheme:
        raise TritonError(f"{target!r} is a {scheme} address, but protocol={protocol!r} was asked for")
    if scheme not in PROTOCOLS:
        raise TritonError(f"protocol must be one of {PROTOCOLS}, got {scheme!r}")
    host = match["host"]
    if ":" not in host:
        host += ":8001" if scheme == "grpc" else ":8000"
    return scheme, host, match["model"]


def _client_module(protocol: str) -> Any:
    try:
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
    except ImportError:
        raise TritonError(missing_extra_message(EXTRA_BY_NAME["triton"], "tritonclient", "--backend triton")) from None
    return module


def _check_current(params: dict[str, str], where: str) -> None:
    """Refuse a served model whose bundle, held on this machine, has other weights or (after ``edge-ad threshold``)
    another threshold than the model was exported with."""
    bundle = params.get("bundle_dir")
    if not bundle or not (Path(bundle) / CONFIG_NAME).is_file():
        return
    precision = params.get("precision", "fp32")
    redo = (
        f"rewrite the repository with `edge-ad export {bundle} --format triton --precision {precision} --out REPO` "
        "and have Triton reload the model"
    )
    check_artifact_current(bundle, params.get("bundle_weights_sha256"), where, metadata=params, redo=redo)


class TritonRuntime:
    """``predict(batch) -> (image_score[N], anomaly_map[N,H,W])`` through a model served by Triton."""

    name = "triton"
    precision: str

    def __init__(self, url: str, model: str | None = None, protocol: str | None = None, timeout_s: float = 60.0):
        self.protocol, self.address, from_url = parse_target(url, protocol)
        if model is not None and from_url is not None and model != from_url:
            raise TritonError(f"model {model!r} given, but the address names {from_url!r}")
        self.timeout_s = float(timeout_s)
        self._module = _client_module(self.protocol)
        self._local = threading.local()
        self.model = model or from_url or self._only_model()
        self._read_config(self._config())

    # ----------------------------------------------------------------- connection
    @property
    def url(self) -> str:
        return f"{self.protocol}://{self.address}/{self.model}"

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            if self.protocol == "http":
                client = self._module.InferenceServerClient(
                    self.address, connection_timeout=self.timeout_s, network_timeout=self.timeout_s
                )
            else:
                client = self._module.InferenceServerClient(self.address)
            self._local.client = client
        return client

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from tritonclient.utils import InferenceServerException

        try:
            return fn(*args, **kwargs)
        except InferenceServerException as exc:
            raise TritonError(f"Triton at {self.address}: {what} failed: {exc.message() or exc}") from None
        except OSError as exc:  # refused, unreachable, timed out
            raise TritonError(f"cannot reach Triton at {self.protocol}://{self.address} ({what}): {exc}") from None

    def _only_model(self) -> str:
        client = self._client()
        if self.protocol == "grpc":
            index = self._call("listing models", client.get_model_repository_index, as_json=True).get("models", [])
        else:
            index = self._call("listing models", client.get_model_repository_index)
        names = sorted({m["name"] for m in index if m.get("state", "READY") == "READY"})
        if len(names) != 1:
            raise TritonError(
                f"Triton at {self.address} serves {len(names)} ready models ({', '.join(names) or 'none'}): "
                "name one (http://HOST:PORT/MODEL)"
            )
        return names[0]

    def _config(self) -> dict[str, Any]:
        client = self._client()
        if self.protocol == "grpc":
            response = self._call(f"reading {self.model}'s config", client.get_model_config, self.model, as_json=True)
            return dict(response.get("config", response))
        return dict(self._call(f"reading {self.model}'s config", client.get_model_config, self.model))

    # ----------------------------------------------------------------- model parameters
    def _read_config(self, config: dict[str, Any]) -> None:
        where = f"Triton model {self.model!r} at {self.address}"
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        missing = [k for k in ("bundle_format_version", "preprocessing", "threshold", "score_stats") if k not in params]
        if missing:
            hint = "export it with `edge-ad export --format triton`"
            raise BundleError(f"{where} lacks edge-ad parameters {missing}: {hint}")
        info = ArtifactInfo.parse(params, where, required=())
        self.preprocessing = info.preprocessing
        self.score_stats: dict[str, Any] = dict(info.score_stats)
        self.threshold = info.threshold
        _check_current(params, where)
        self.image_size = self.preprocessing.image_size
        self.precision = params.get("precision", "fp32")
        self.bundle_weights_sha256 = params.get("bundle_weights_sha256")
        # what a serve record names as its model: the served file (engine, else ONNX)
        self.model_sha256 = params.get("engine_sha256") or params.get("onnx_sha256")
        self.parameters = params
        self.max_batch = int(config.get("max_batch_size", 0)) or 1
        inputs = [i["name"] for i in config.get("input", [])]
        outputs = {o["name"] for o in config.get("output", [])}
        if inputs != [INPUT_NAME] or not set(OUTPUT_NAMES) <= outputs:
            raise BundleError(f"{where} has inputs {inputs} and outputs {sorted(outputs)}; expected images -> "
                              f"{', '.join(OUTPUT_NAMES)}")

    # ----------------------------------------------------------------- inference
    def _infer(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        module = self._module
        request = module.InferInput(INPUT_NAME, list(chunk.shape), "FP32")
        request.set_data_from_numpy(chunk)
        wanted = [module.InferRequestedOutput(name) for name in OUTPUT_NAMES]
        client = self._client()
        kwargs = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
        result = self._call("inference", client.infer, self.model, [request], outputs=wanted, **kwargs)
        n, s = chunk.shape[0], self.image_size
        score = np.asarray(result.as_numpy("image_score"), dtype=np.float32).reshape(n)
        amap = np.asarray(result.as_numpy("anomaly_map"), dtype=np.float32).reshape(n, s, s)
        return score, amap

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        arr = check_batch(batch, self.image_size)
        n = arr.shape[0]
        if n == 0:
            return np.zeros((0,), np.float32), np.zeros((0, self.image_size, self.image_size), np.float32)
        if n <= self.max_batch:
            return self._infer(arr)
        parts = [self._infer(arr[i : i + self.max_batch]) for i in range(0, n, self.max_batch)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def __repr__(self) -> str:
        return f"TritonRuntime({self.url!r}, precision={self.precision}, max_batch={self.max_batch})"

