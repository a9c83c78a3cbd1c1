"""The torch binding of the anomaly-map kernels: a ``load_inline`` extension launched on torch's stream.

Split from :mod:`edge_ad.runtimes.cuda_postprocess` because it is the one binding that needs torch (and a C++
launcher compiled with the kernels); torch is imported only inside the probe and the constructor, so running
a model through cupy or pycuda never loads it.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from .cuda_bindings import _Backend
from .cuda_kernel import HPASS_BLOCK, MAX_BLOCK, VPASS_BLOCK, _launch_plan


def _probe_torch() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    try:
        import torch
        from torch.utils import cpp_extension
    except Exception as exc:
        return f"torch cannot be imported ({exc})"
    if not torch.cuda.is_available():
        return "torch sees no CUDA device (CPU-only build or no driver)"
    if not cpp_extension.is_ninja_available():
        return "torch extensions need ninja (pip install ninja)"
    if cpp_extension.CUDA_HOME is None:
        return "torch extensions need the CUDA toolkit (nvcc; set CUDA_HOME)"
    return None


# C++ launcher compiled together with the kernel source by torch's load_inline. Launch geometry is filled in
# from the constants of cuda_kernel so the three backends launch identically.
_TORCH_DECLARATION = """
void edge_ad_anomaly_map_launch(torch::Tensor patch, torch::Tensor taps, torch::Tensor rows,
                                torch::Tensor out, torch::Tensor score, int64_t stream);
"""

_TORCH_LAUNCHER = """
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

// patch [N, h, w], taps [2r + 1], rows [N, h, W], out [N, H, W], score [N]: float32, contiguous, same device.
// stream: the cudaStream_t the inputs were produced on (torch.cuda.current_stream(device).cuda_stream).
void edge_ad_anomaly_map_launch(torch::Tensor patch, torch::Tensor taps, torch::Tensor rows,
                                torch::Tensor out, torch::Tensor score, int64_t stream_handle) {{
    const c10::cuda::CUDAGuard guard(patch.device());
    cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
    const int n = (int)patch.size(0), h = (int)patch.size(1), w = (int)patch.size(2);
    const int H = (int)out.size(1), W = (int)out.size(2);
    const int radius = (int)((taps.numel() - 1) / 2);
    if (n == 0) return;
    anomaly_map_hpass<<<dim3((W + {hb} - 1) / {hb}, h, n), dim3({hb}, 1, 1), 0, stream>>>(
        patch.data_ptr<float>(), h, w, W, taps.data_ptr<float>(), radius, rows.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    anomaly_map_vpass<<<dim3((W + {vbx} - 1) / {vbx}, (H + {vby} - 1) / {vby}, n), dim3({vbx}, {vby}, 1), 0,
                        stream>>>(
        rows.data_ptr<float>(), h, W, H, taps.data_ptr<float>(), radius, out.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    anomaly_map_image_max<<<dim3(n, 1, 1), dim3({mb}, 1, 1), 0, stream>>>(
        patch.data_ptr<float>(), h * w, score.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}}
"""


class _TorchBackend(_Backend):
    name = "torch"

    def __init__(self, source: str, taps: np.ndarray) -> None:
        import torch
        from torch.utils.cpp_extension import load_inline

        self.torch = torch
        launcher = _TORCH_LAUNCHER.format(hb=HPASS_BLOCK[0], vbx=VPASS_BLOCK[0], vby=VPASS_BLOCK[1], mb=MAX_BLOCK[0])
        # torch hashes the sources into the build: an edited kernel is rebuilt, an unchanged one is cached.
        self.extension = load_inline(
            name="edge_ad_anomaly_map",
            cpp_sources=[_TORCH_DECLARATION],
            cuda_sources=[source, launcher],
            functions=["edge_ad_anomaly_map_launch"],
            extra_cuda_cflags=["-O3"],
            verbose=False,
        )
        self.taps_host = torch.from_numpy(taps)
        self.taps: dict[Any, Any] = {}  # per device

    def is_device_array(self, x: Any) -> bool:
        return isinstance(x, self.torch.Tensor)

    def _taps(self, device: Any) -> Any:
        if device not in self.taps:
            self.taps[device] = self.taps_host.to(device)
        return self.taps[device]

    def _run(self, patch: Any, out_hw: tuple[int, int]) -> tuple[Any, Any]:
        torch = self.torch
        patch = patch.to(dtype=torch.float32).contiguous()
        n, h, w = patch.shape
        height, width = out_hw
        _launch_plan(n, h, w, height, width)  # grid limits, before allocating
        rows = torch.empty((n, h, width), dtype=torch.float32, device=patch.device)
        out = torch.empty((n, height, width), dtype=torch.float32, device=patch.device)
        score = torch.empty((n,), dtype=torch.float32, device=patch.device)
        # The kernels join the stream the caller queued the patch scores on, so they run after them and before
        # whatever the caller queues next; the outputs were allocated on that same stream.
        stream = torch.cuda.current_stream(patch.device)
        self.extension.edge_ad_anomaly_map_launch(
            patch, self._taps(patch.device), rows, out, score, int(stream.cuda_stream)
        )
        return score, out

    def run_device(self, patch: Any, out_hw: tuple[int, int]) -> tuple[Any, Any]:
        if patch.device.type == "cuda":
            return self._run(patch, out_hw)
        # A CPU tensor: compute on the current CUDA device, hand the results back on the CPU.
        _launch_plan(*patch.shape, *out_hw)  # before uploading anything
        score, out = self._run(patch.to("cuda"), out_hw)
        return score.to(patch.device), out.to(patch.device)

    def run_numpy(self, patch: np.ndarray, out_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        _launch_plan(*patch.shape, *out_hw)  # before uploading anything
        score, out = self._run(self.torch.from_numpy(patch).to("cuda"), out_hw)
        return score.cpu().numpy(), out.cpu().numpy()
