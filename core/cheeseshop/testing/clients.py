"""The environment real clients (twine, pip, uv) run in during tests: built from scratch.

No user configuration, keyring, proxy or terminal: nothing on the machine running the
tests can change what a client does, prompt, or send it anywhere but the index under test
(this machine's pip configuration adds local package folders, for one).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["client_env"]


def client_env(home: Path) -> dict[str, str]:
    """Variables for a client process whose home directory is ``home`` (created)."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        # Rich (in twine) wraps at 80 columns off a terminal; keep each message on one line.
        "COLUMNS": "250",
        "NO_COLOR": "1",
        "TWINE_NON_INTERACTIVE": "1",
        "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_INPUT": "1",
    }
