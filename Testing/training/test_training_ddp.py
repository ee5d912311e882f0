"""The training command runs under torchrun with two CPU processes (gloo), and resumes from its checkpoint."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from training.split import REPOSITORY_ROOT


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_gloo_run_then_resume(tiny_cache, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["-m", "training.train_sam", "--mode", "lora", "--cache", str(tiny_cache.folder), "--run-dir",
              str(tmp_path), "--batch-size", "2", "--warmup", "1", "--log-every", "1"]
    distributed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
         *common, "--steps", "2"], cwd=REPOSITORY_ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert distributed.returncode == 0, distributed.stderr[-3000:]
    assert json.loads((tmp_path / "settings.json").read_text())["world_size"] == 2
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    resumed = subprocess.run([sys.executable, *common, "--steps", "3"], cwd=REPOSITORY_ROOT, env=env,
                             capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed" in resumed.stdout and "at step 2" in resumed.stdout
    steps = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
