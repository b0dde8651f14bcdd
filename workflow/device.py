"""Where a job's models run: the workflow's ``device`` setting (``auto``, ``cpu``, ``cuda``, ``cuda:N``) resolved
once per job, and handed to the learned matchers that take a ``device`` option.

Torch is imported only when a device is resolved, so that the modules which merely pass a setting on stay light.
"""

from __future__ import annotations


def resolve_device(requested: str) -> str:
    """``"auto"`` -> ``"cuda"`` when a CUDA device is available, else ``"cpu"``; other values are checked."""
    import torch  # heavy: only the jobs that run a model resolve a device

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"unknown device {requested!r}; use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} requested but no CUDA device is available; use auto or cpu")
    return requested


def with_device(name: str, conf: dict, device: str) -> dict:
    """Fill a learned matcher's ``device`` option from the workflow's device unless set explicitly."""
    from workflow.matchers import MATCHERS  # loads OpenCV and every matcher: only when a matcher is configured

    if name in MATCHERS and "device" in MATCHERS[name].default_conf and "device" not in conf:
        conf = {**conf, "device": resolve_device(device)}
    return conf
