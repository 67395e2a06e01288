"""Run ``alignlab train`` in this process, optionally SIGKILLing itself at a chosen moment.

Example: ``python tests/train/_runner.py --kill-in-rename 4 -- run.yaml train.max_steps=6``

Used by test_resume_ddp.py to interrupt a run the way a crash or an OOM killer would: no
``finally`` blocks, no atexit handlers, no flushing. The kill points:

- ``--kill-before-step N``: as optimizer step N is about to start (step N-1 done, not saved);
- ``--kill-in-rename N``: while writing the step-N checkpoint, after every file of its temporary
  folder is written and fsynced, just before the folder is renamed into place;
- ``--kill-before-pointer N``: after the step-N folder is renamed into place, before the
  ``latest`` pointer is updated to name it.

Used by test_nonfinite_ddp.py to make one DDP rank alone see a bad loss:

- ``--nan-on-rank R --nan-at-step N``: rank R's loss is NaN on every micro-batch of optimizer
  step N (the graph kept, as a real overflow would); ``--loss-factor F`` multiplies it by F
  instead (1e30: a finite loss whose float16 gradients overflow). After each optimizer step every rank
  prints one ``nonfinite-probe`` line: its step, counters, data position and a digest of its
  trainable weights (gathered, under FSDP), so a test can tell whether the ranks still agree.
  After the run, one ``teardown-probe`` line counts the DDP wrappers still alive.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys
from pathlib import Path


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kill-before-step", type=int)
    parser.add_argument("--kill-in-rename", type=int)
    parser.add_argument("--kill-before-pointer", type=int)
    parser.add_argument("--nan-on-rank", type=int, default=0)
    parser.add_argument("--nan-at-step", type=int)
    parser.add_argument("--loss-factor", type=float, default=float("nan"))
    parser.add_argument("train_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    train_args = [a for a in args.train_args if a != "--"]

    import torch

    torch.set_num_threads(1)

    from alignlab.train import checkpoint, loop

    if args.kill_before_step is not None:
        original_step = loop.Trainer._optimizer_step

        def optimizer_step(self, device):  # type: ignore[no-untyped-def]
            if self.step + 1 == args.kill_before_step:
                die()
            return original_step(self, device)

        loop.Trainer._optimizer_step = optimizer_step

    if args.kill_in_rename is not None:
        prefix = f".tmp-step-{args.kill_in_rename:08d}-"
        original_replace = os.replace

        def replace(src, dst, *rest, **kwargs):  # type: ignore[no-untyped-def]
            if Path(src).name.startswith(prefix):
                die()
            return original_replace(src, dst, *rest, **kwargs)

        checkpoint.os.replace = replace  # checkpoint.os is the os module: patched process-wide

    if args.kill_before_pointer is not None:
        target = f"step-{args.kill_before_pointer:08d}"
        original_pointer = checkpoint.write_text_atomic

        def write_atomic(path, text):  # type: ignore[no-untyped-def]
            if text == target:
                die()
            return original_pointer(path, text)

        checkpoint.write_text_atomic = write_atomic

    if args.nan_at_step is not None:
        original_init = loop.Trainer.__init__
        original_optimizer_step = loop.Trainer._optimizer_step

        def init(self, *rest, **kwargs):  # type: ignore[no-untyped-def]
            original_init(self, *rest, **kwargs)
            healthy = self.step_fn

            def step_fn(indices):  # type: ignore[no-untyped-def]
                result = healthy(indices)
                if self.rank == args.nan_on_rank and self.step + 1 == args.nan_at_step:
                    result.loss_sum = result.loss_sum * args.loss_factor
                return result

            self.step_fn = step_fn

        def probed_step(self, device):  # type: ignore[no-untyped-def]
            out = original_optimizer_step(self, device)
            digest = hashlib.sha256()
            for param in self.params:
                # FSDP's DTensor shards gathered (a collective: every rank probes every step).
                full = param.detach().full_tensor() if hasattr(param, "full_tensor") else param.detach()
                digest.update(full.cpu().contiguous().numpy().tobytes())
            print(f"nonfinite-probe rank={self.rank} step={self.step + 1} "
                  f"skipped={self.counters['skipped_nonfinite']} micro_batches={self.micro_batches} "
                  f"weights={digest.hexdigest()[:16]}", flush=True)
            return out

        loop.Trainer.__init__ = init
        loop.Trainer._optimizer_step = probed_step

    from alignlab.cli import main as cli_main

    code = cli_main(["train", *train_args])
    if args.nan_at_step is not None:
        # What outlives the run: a DDP wrapper left for interpreter teardown, after the process
        # group is destroyed, can abort the process (exit -6) after a good run.
        import gc

        alive = sum(isinstance(o, torch.nn.parallel.DistributedDataParallel) for o in gc.get_objects())
        print(f"teardown-probe ddp_alive={alive}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
