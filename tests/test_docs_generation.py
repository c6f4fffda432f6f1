"""docs/generation.md's "Trying it without weights" block runs as written, offline."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

DOC = Path(__file__).parents[1] / "docs" / "generation.md"


def test_trying_sd_without_weights_runs_as_written(tmp_path):
    section = DOC.read_text().split("## Trying it without weights", 1)[1]
    script = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    assert "salun sd tiny" in script and "salun sd unlearn" in script
    bindir = str(Path(sys.executable).parent)  # the venv's `salun`
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ["PATH"], "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    res = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "runs" / "tiny-salun" / "config.json").is_file()
    assert (tmp_path / "runs" / "tiny-mask.safetensors").is_file()
