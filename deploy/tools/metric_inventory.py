"""Print every metric name the pipeline exports, one per line: what alerts and dashboards may use.

Run with the project's venv (it imports the services' real metric classes; the optimizer's pulls torch):

    .venv/bin/python deploy/tools/metric_inventory.py > deploy/build/metrics.txt

reenact_* names come from the registries the services build (reenact/runtime/metrics.py,
services/optimizer/servicer.py, services/trainer/__main__.py, services/gateway/servicer.py), expanded the way the exposition format
writes them (counter -> _total, histogram -> _bucket/_sum/_count). Triton's names are the ones its
tritonserver 2.51 exports (tests/deploy/test_prometheus_scrape.py checks the CPU ones against a running
server); the nv_gpu_* ones exist only on GPU machines (Triton's metrics documentation).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

TRITON_METRICS = (
    # verified against tritonserver 2.51 (nvidia-pytriton 0.7.0) with a python-backend model loaded
    "nv_cpu_memory_total_bytes", "nv_cpu_memory_used_bytes", "nv_cpu_utilization",
    "nv_inference_compute_infer_duration_us", "nv_inference_compute_input_duration_us",
    "nv_inference_compute_output_duration_us", "nv_inference_count", "nv_inference_exec_count",
    "nv_inference_pending_request_count", "nv_inference_queue_duration_us", "nv_inference_request_duration_us",
    "nv_inference_request_failure", "nv_inference_request_success",
    "nv_pinned_memory_pool_total_bytes", "nv_pinned_memory_pool_used_bytes",
)
TRITON_GPU_METRICS = (  # GPU machines only (DCGM); not verifiable on a CPU CI machine
    "nv_gpu_utilization", "nv_gpu_memory_total_bytes", "nv_gpu_memory_used_bytes", "nv_gpu_power_usage",
    "nv_gpu_power_limit", "nv_energy_consumption",
)
TRITON_CPU_VERIFIED = frozenset(TRITON_METRICS)


def exposition_names(registry) -> set[str]:
    names = set()
    for fam in registry.collect():
        if fam.type == "counter":
            names.add(fam.name + "_total")
        elif fam.type == "histogram":
            names |= {fam.name + "_bucket", fam.name + "_sum", fam.name + "_count"}
        elif fam.type == "summary":
            names |= {fam.name, fam.name + "_sum", fam.name + "_count"}
        else:
            names.add(fam.name)
    return names


def reenact_metrics() -> set[str]:
    from prometheus_client import CollectorRegistry

    from reenact.runtime.metrics import ServiceMetrics
    from services.gateway.servicer import GatewayMetrics
    from services.optimizer.cache import ModelCache
    from services.optimizer.servicer import CacheCollector, OptimizerMetrics
    from services.trainer.__main__ import JobsCollector
    from services.trainer.jobs import STATES

    names = exposition_names(ServiceMetrics("inventory").registry)
    reg = CollectorRegistry()
    OptimizerMetrics(reg)
    GatewayMetrics(reg)
    reg.register(CacheCollector(ModelCache(load=lambda *_: None, latest=lambda *_: 1, max_bytes=1)))
    reg.register(JobsCollector(types.SimpleNamespace(counts=lambda: {s: 0 for s in STATES})))
    return names | exposition_names(reg)


def all_metrics() -> list[str]:
    return sorted(reenact_metrics() | set(TRITON_METRICS) | set(TRITON_GPU_METRICS))


if __name__ == "__main__":
    print("\n".join(all_metrics()))
