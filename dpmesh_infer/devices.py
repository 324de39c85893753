"""Device names from users (``auto``, ``cpu``, ``cuda``, ``cuda:N``, or a torch.device) -> torch.device."""

from __future__ import annotations

from .errors import InputError


def resolve_device(device=None):
    """``None``/``"auto"``: CUDA when available, else CPU. Anything else is checked: a malformed name or
    CUDA on a machine without it is an :class:`InputError` that says what to use instead."""
    import torch

    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InputError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}") from e
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {str(device)!r} was requested but CUDA is not available on this machine "
                         "(use --device cpu or auto)")
    return dev


def autocast_off(where):
    """A context in which autocast is disabled for the device of ``where`` (a tensor, a torch.device or
    a device type such as "cuda"), so the code inside computes at its inputs' precision; a no-op for
    device types without autocast (e.g. "meta")."""
    import contextlib

    import torch

    device_type = where.device.type if isinstance(where, torch.Tensor) else torch.device(where).type
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()
