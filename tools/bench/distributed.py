"""Rank 1 of the GPU check's two-device FSDP2 run: `python -m tools.bench.distributed CFG_JSON`.

The caller (tools/bench/gpu.py, `fsdp_two_processes`) runs rank 0 in its own process and starts this one with
LOCAL_RANK=1, WORLD_SIZE, NODE_RANK, MASTER_ADDR and MASTER_PORT set, as torchrun would; Lightning then joins the
process group instead of launching processes. Rank 0 records the losses (the mean over both ranks).
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    from tools.bench.coordinator import run_inline

    cfg = json.loads(sys.argv[1])
    sync = None
    if cfg.get("accelerator") == "cuda":
        import torch

        sync = torch.cuda.synchronize
    try:
        run_inline("lit_pref DPO", cfg, sync)
    finally:
        import torch.distributed as dist

        if dist.is_initialized():  # a clean exit: an open gloo group can abort the interpreter's teardown
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
