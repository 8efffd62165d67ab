"""What every benchmark result records about the machine and the software it ran on."""

from __future__ import annotations

import os
import platform


def machine_info() -> dict:
    """torch and Python versions, platform string and CPU count (imports torch)."""
    import torch

    return dict(
        torch=torch.__version__,
        python=platform.python_version(),
        platform=platform.platform(),
        cpu_count=os.cpu_count(),
    )
