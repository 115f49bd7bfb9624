"""The receiver library stands alone: a copy of callbacks/ imports, signs and verifies in a Python where
the service and observability packages cannot be imported at all."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import callbacks

PROGRAM = """
import sys
sys.modules["service"] = None  # `import service...` now fails: the library must never try
sys.modules["observability"] = None
sys.path.insert(0, sys.argv[1])

import datetime, importlib, pkgutil, time
import callbacks
assert callbacks.__file__.startswith(sys.argv[1]), callbacks.__file__
for module in pkgutil.walk_packages(callbacks.__path__, "callbacks."):
    importlib.import_module(module.name)

from standardwebhooks.webhooks import Webhook
from callbacks.keys import generate_secret
secret = generate_secret()
body = b'{"type":"webhook.test","timestamp":"2026-01-01T00:00:00+00:00","data":{}}'
stamp = int(time.time())
headers = {
    "webhook-id": "evt_standalone",
    "webhook-timestamp": str(stamp),
    "webhook-signature": Webhook(secret).sign(
        "evt_standalone", datetime.datetime.fromtimestamp(stamp), body.decode()
    ),
}
print(callbacks.verify(body, headers, secret)["type"])
"""


def test_the_receiver_library_works_where_the_service_cannot_be_imported(tmp_path: Path) -> None:
    source = Path(callbacks.__file__).parent
    shutil.copytree(source, tmp_path / "callbacks", ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run(
        [sys.executable, "-I", "-c", PROGRAM, str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "webhook.test"
