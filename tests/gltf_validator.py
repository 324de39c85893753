"""The Khronos glTF validator (npm ``gltf-validator``) run with node, for tests.

``install.sh`` (step ``install_gltf_validator``) installs it into ``$DPMESH_GLTF_VALIDATOR_DIR`` (default
``${XDG_CACHE_HOME:-~/.cache}/dpmesh/gltf-validator``; read when this module is imported, before the tests
point the cache at a temporary folder). Tests skip only when node itself is unavailable; node without the
validator is a failure that names the install command.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

_SCRIPT = r"""
const fs = require("fs");
const validator = require(process.argv[1]);
const data = new Uint8Array(fs.readFileSync(process.argv[2]));
validator.validateBytes(data, {maxIssues: 1000, writeTimestamp: false})
  .then((report) => { process.stdout.write(JSON.stringify(report)); })
  .catch((error) => { process.stderr.write(String(error)); process.exit(2); });
"""


_DIR = Path(os.environ.get("DPMESH_GLTF_VALIDATOR_DIR")
            or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dpmesh" / "gltf-validator")


def validator_dir() -> Path:
    return _DIR


def validate_glb(path: str | os.PathLike) -> dict:
    """The validator's JSON report of a .glb file (``report["issues"]["numErrors"]`` etc.)."""
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("node (Debian: apt-get install nodejs) is not installed: the Khronos glTF validator cannot run")
    module = validator_dir() / "node_modules" / "gltf-validator"
    if not (module / "package.json").is_file():
        pytest.fail(f"the Khronos glTF validator is not installed in {validator_dir()}: run bash install.sh, or "
                    f"npm install --prefix {validator_dir()} gltf-validator")
    proc = subprocess.run([node, "-e", _SCRIPT, str(module), str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)
