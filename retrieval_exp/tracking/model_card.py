"""A model folder's README.md for the Hugging Face hub, written from the MLflow run that trained the model: what it
was trained from and how (base model, method, loss, data, the settings that matter), what it measured, where the
record is (run id, git commit) and the exact command, with the code that loads it in sentence-transformers."""

from __future__ import annotations

import json
from pathlib import Path

from mlflow.entities import Run as MlflowRun

from retrieval_exp.interfaces import ModelKind
from retrieval_exp.models.hub import SETTINGS_FILE

TRAINING = {  # the settings a card lists, by MLflow param
    "loss._target_": "loss",
    "data.train.dataset": "training data",
    "data.train.path": "training data",
    "trainer.max_steps": "steps",
    "trainer.batch_size": "batch size",
    "optim.lr": "learning rate",
    "seed": "seed",
}
NOT_MEASURES = ("train/", "time/", "system/", "memory/", "val/", "agreement/", "count/")
USE = {
    ModelKind.BI_ENCODER: """```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("{where}")
queries = model.encode_query(["how do vaccines work"])  # the "query" prompt: {query_prefix!r}
documents = model.encode_document(["Vaccines train the immune system."])  # the "document" prompt: {doc_prefix!r}
print(model.similarity(queries, documents))
```""",
    ModelKind.CROSS_ENCODER: """```python
from sentence_transformers import CrossEncoder

model = CrossEncoder("{where}")
print(model.predict([("how do vaccines work", "Vaccines train the immune system.")]))  # raw relevance scores
```

The score head is a linear layer on the [CLS] state; transformers' `AutoModelForSequenceClassification` has
another head for this architecture, so load the folder with sentence-transformers (or retrieval_exp).""",
}


def write_model_card(folder: Path, run: MlflowRun, where: str | None = None) -> Path:
    """README.md in `folder`, a model folder saved by the suite, from the `run` that trained it. `where`: the
    folder's name in the card's code (default: the folder's path)."""
    settings = json.loads((folder / SETTINGS_FILE).read_text())
    params, tags = run.data.params, run.data.tags
    base = params.get("model.name_or_path", "unknown")
    kind = ModelKind(settings["kind"])
    header = {
        "base_model": base,
        "library_name": "sentence-transformers",
        "pipeline_tag": "sentence-similarity" if kind is ModelKind.BI_ENCODER else "text-ranking",
        "tags": ["retrieval_exp", tags.get("method", "unknown"), "information-retrieval"],
    }
    lines = ["---", *(f"{key}: {json.dumps(value)}" for key, value in header.items()), "---", ""]
    lines += [f"# {tags.get('method', 'model')} · {Path(base).name}", ""]
    lines += [f"A {kind.replace('_', '-')} trained with retrieval_exp, method `{tags.get('method')}`.", ""]
    lines += ["## Use", "", USE[kind].format(where=where or str(folder), **_prefixes(settings)), ""]
    lines += ["## Training", "", "| setting | value |", "| --- | --- |", f"| base model | `{base}` |"]
    given = {label: params[key] for key, label in TRAINING.items() if params.get(key) not in (None, "None")}
    lines += [f"| {label} | `{value}` |" for label, value in given.items()]
    lines += [f"| {name} | `{value}` |" for name, value in sorted(settings.items()) if name != "kind"]
    measures = {name: value for name, value in run.data.metrics.items() if not name.startswith(NOT_MEASURES)}
    lines += ["", f"## Evaluation on {tags.get('dataset', 'its test data')}", ""]
    lines += ["| measure | value |", "| --- | --- |"]
    lines += [f"| {name} | {value:.4f} |" for name, value in sorted(measures.items())]
    lines += ["", "## Provenance", "", f"- MLflow run `{run.info.run_id}`"]
    lines += [f"- retrieval_exp commit `{tags.get('git_commit', 'unknown')}`"]
    command = f"python launch.py {tags.get('overrides', '')}".strip()
    lines += [f"- command: `{command}`", ""]
    path = folder / "README.md"
    path.write_text("\n".join(lines))
    return path


def _prefixes(settings: dict) -> dict[str, str]:
    prefixes = settings.get("prefixes") or {}
    return {"query_prefix": prefixes.get("query", ""), "doc_prefix": prefixes.get("doc", "")}
