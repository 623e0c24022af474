"""Write the model an MLflow run trained as a self-contained folder, ready for `huggingface-cli upload`:

    python -m retrieval_exp.export RUN_ID DIR [--tracking-uri URI] [--name USER/REPO]

The folder is the run's saved model (from its output folder, or downloaded from the tracking store), a Hugging Face
and sentence-transformers model, with a model card (README.md) written from the run's record; --name is the repo id
the card's code loads it by.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from retrieval_exp.errors import UserError
from retrieval_exp.tracking.mlflow_run import add_store_argument
from retrieval_exp.tracking.model_card import write_model_card
from retrieval_exp.tracking.references import finished_run, model_folder


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m retrieval_exp.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_id", help="the MLflow run that trained the model")
    parser.add_argument("out", type=Path, help="the folder to write (must not exist, or be empty)")
    parser.add_argument("--name", help="the hub repo id the model card's code loads (default: the folder's path)")
    add_store_argument(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> Path:
    args = _arguments(argv)
    try:
        if args.out.exists() and any(args.out.iterdir()):
            raise UserError(f"{args.out} is not empty: give a new folder")
        run = finished_run(args.tracking_uri, args.run_id)
        with tempfile.TemporaryDirectory() as scratch:
            shutil.copytree(model_folder(args.tracking_uri, args.run_id, Path(scratch)), args.out, dirs_exist_ok=True)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    write_model_card(args.out, run, args.name)
    print(f"{args.out}: the model of MLflow run {args.run_id}, with its model card; upload it with `huggingface-cli "
          f"upload {args.name or 'USER/REPO'} {args.out}`")  # fmt: skip
    return args.out


if __name__ == "__main__":
    main()
