"""What every benchmark script records about the machine, and how it writes its JSON figures."""

from __future__ import annotations

import json
import os
import platform
from typing import Any


def machine(**extra: Any) -> dict[str, Any]:
    """Cores, platform and JAX version (imports JAX), plus `extra`."""
    import jax

    return {"cpus": os.cpu_count(), "platform": platform.platform(), "jax": jax.__version__, **extra}


def write(out: str, name: str, results: dict[str, Any]) -> None:
    """`results` as `<out>/<name>.json` (the folder created if needed)."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(results, f, indent=1)
