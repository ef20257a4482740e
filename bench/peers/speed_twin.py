"""A checkpoint shaped exactly like the shipped metric's, for the peers that start from one.

The standard-export and transformers-pipeline peers need the fine-tuned PyTorch checkpoint,
which is not committed (the repository ships only the ONNX artifact) and takes an hour to
rebuild, differently on a CPU that trains in bf16. Speed does not depend on the weights'
values, only on the graph and its shapes: the base encoder the metric was fine-tuned from,
with the same two-label head (untrained), serves at the same speed. Its scores are not the
metric's: use it for speed runs only.

    python bench/peers/speed_twin.py build/downloads/minilm build/peers/speed-twin
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from models.finetune import classifier_from_base, save_checkpoint  # noqa: E402
from service.runtime.spec import load_spec  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("base", type=Path, help="the base encoder (`lunaserve base fetch minilm`)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--spec", type=Path, default=ROOT / "specs" / "context_adherence.yaml")
    args = parser.parse_args()
    if not (args.base / "config.json").is_file():
        parser.error(f"{args.base}: no config.json (run `lunaserve base fetch minilm` first)")
    import torch

    torch.manual_seed(0)  # the head's initial weights: the same twin every time
    # attention dropout 0, as the shipped recipe trains (Makefile: TRAIN_OPTIONS)
    model = classifier_from_base(args.base, load_spec(args.spec).labels, attention_dropout=0.0)
    save_checkpoint(model, args.base, args.out)
    print(f"written: {args.out} (untrained head: for speed runs only)")


if __name__ == "__main__":
    main()
