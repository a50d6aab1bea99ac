"""One rank of a Hugging Face Trainer run under torch.distributed on the CPU (gloo), with
DimensionalityCallback, for tests/test_distributed.py. The parent starts every rank with the
launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), as torchrun does.

    python hf_ddp_child.py OUT_DIR

Writes ``OUT_DIR/rank<k>.json``: the tracker's mode, rank, collectives and rows per layer.
"""

from __future__ import annotations

import json
import os
import sys

import torch
import transformers

from models import Tokens, tiny_gpt2
from ndt_fast.integrations.transformers import DimensionalityCallback


def main() -> None:
    out = sys.argv[1]
    torch.set_num_threads(1)
    callback = DimensionalityCallback(sampling_frequency=4, output=os.path.join(out, "run.h5"))
    args = transformers.TrainingArguments(
        output_dir=out, per_device_train_batch_size=4, max_steps=12, report_to=[], save_strategy="no",
        use_cpu=True, disable_tqdm=True, ddp_backend="gloo", dataloader_num_workers=0, logging_strategy="no")
    trainer = transformers.Trainer(model=tiny_gpt2(), args=args, train_dataset=Tokens(200),
                                   callbacks=[callback])
    trainer.train()
    tracker = callback.tracker
    with open(os.path.join(out, f"rank{args.process_index}.json"), "w") as f:
        json.dump({"mode": tracker.distributed, "rank": tracker.rank, "collectives": tracker.collectives,
                   "rows": {name: frame["rows"].tolist() for name, frame in tracker.get_results().items()}}, f)


if __name__ == "__main__":
    main()
