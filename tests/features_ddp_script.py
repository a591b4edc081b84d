"""Encode-stage driver for the subprocess tests: DDP (2 CPU processes, gloo; every rank encodes its own shards)
and kill-and-resume (``--sleep`` slows each batch so a test can SIGKILL the run mid-way).

usage: python tests/features_ddp_script.py ROOT DATA_JSON MODEL_JSON [--devices N] [--sleep S]
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from lightning_alchemist.data.datamodule import T2IDataModule  # noqa: E402
from lightning_alchemist.features import FeatureStore, encode_features  # noqa: E402
from lightning_alchemist.proxy.factory import build_proxy  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("data")
    parser.add_argument("model")
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    proxy = build_proxy(json.loads(args.model)).eval()
    dm = T2IDataModule(json.loads(args.data))
    kwargs = {"accelerator": "cpu", "devices": args.devices, "enable_progress_bar": False}
    if args.devices > 1:
        kwargs["strategy"] = "ddp"
    callbacks = []
    if args.sleep > 0:
        import time

        import lightning.pytorch as pl

        class SlowDown(pl.Callback):
            def on_predict_batch_end(self, *a, **k) -> None:
                time.sleep(args.sleep)

        callbacks.append(SlowDown())
    info = encode_features(proxy, dm, args.root, trainer_kwargs=kwargs, batch_size=50, callbacks=callbacks)
    store = FeatureStore(args.root, info["fingerprint"])
    print(f"rank-done rows={info['rows']} written={len(info['written'])} store={len(store)}", flush=True)
    if torch.distributed.is_initialized():  # join gloo's threads now: one left to interpreter teardown can abort the exit
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
