"""Bad input, kind by kind: each is one line naming what is wrong and what would work, raised by the checks every
run makes before it writes anything (experiment.check), and nothing is written: no MLflow store, no cache entry.

`{inputs}` in an override is a folder of broken files the test makes; registered ids are unique per case, as
ir_datasets registers an id once per process."""

import gzip
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from retrieval_exp.data.local import register_beir_folder
from retrieval_exp.errors import UserError
from retrieval_exp.experiment import check
from retrieval_exp.retrieval.run import RunFile
from tests.conftest import TINY, TINY_DATA, build_tiny_bert, compose_config

TEACHER_PAIRS = ["data=tiny_pairs", "loss=hybrid_kd", "model@teacher=tiny_bert"]
RERANK_RUN = "retriever=rerank_run"


def _lines(name: str, text: str) -> Callable[[Path], None]:
    return lambda inputs: (inputs / name).write_text(text)


def _folder(change: Callable[[Path], None]) -> Callable[[Path], None]:
    """A copy of the tiny BEIR folder as inputs/folder, then `change`d."""

    def make(inputs: Path) -> None:
        shutil.copytree(TINY_DATA, inputs / "folder")
        change(inputs / "folder")

    return make


def _append(name: str, line: str) -> Callable[[Path], None]:
    return _folder(lambda folder: (folder / name).open("a").write(line))


def _model(change: Callable[[Path], None]) -> Callable[[Path], None]:
    """A copy of the tiny BERT folder as inputs/model, then `change`d."""

    def make(inputs: Path) -> None:
        build_tiny_bert(inputs / "model")
        change(inputs / "model")

    return make


def _parquet(columns: dict[str, list]) -> Callable[[Path], None]:
    return lambda inputs: pd.DataFrame(columns).to_parquet(inputs / "run.parquet")


def _nothing(inputs: Path) -> None:
    return None


def _collection(name: str) -> list[str]:
    """The tiny benchmark and inputs/folder registered as its collection `name`/test."""
    return ["benchmark=tiny", f"+benchmark.collections.{name}={{test: {name}/test, folder: '{{inputs}}/folder'}}"]


CASES = {  # kind: (overrides, the inputs to make, the line printed)
    "unknown dataset id": (["data.test=beir/no-such-dataset/test"], _nothing, "unknown dataset id 'beir/no-such"),
    "dataset without qrels": (["data.test=beir/scifact"], _nothing, "has no qrels"),
    "model not in the cache": (["model.name_or_path=nobody/no-such-model"], _nothing, "is not in the Hugging Face"),
    "model folder without config.json": (
        ["model.name_or_path={inputs}/model"],
        _model(lambda model: (model / "config.json").unlink()),
        "has no config.json: point model.name_or_path at a saved model",
    ),
    "model folder without weights": (
        ["model.name_or_path={inputs}/model"],
        _model(lambda model: (model / "model.safetensors").unlink()),
        "has no weights (none of model.safetensors,",
    ),
    "model config without model_type": (
        ["model.name_or_path={inputs}/model"],
        _model(lambda model: (model / "config.json").write_text('{"hidden_size": 32}')),
        "has a config.json without model_type",
    ),
    "language model not in the cache": (
        ["model=tiny_revela", "loss=revela", "model.lm=nobody/no-such-lm"],
        _nothing,
        "model 'nobody/no-such-lm' is not in the Hugging Face cache",
    ),
    "teacher not in the cache": (
        [*TEACHER_PAIRS, "teacher.name_or_path=nobody/teacher"],
        _nothing,
        "model 'nobody/teacher' is not in the Hugging Face cache",
    ),
    "distillation without a teacher": (["loss=margin_mse"], _nothing, "distils a teacher's scores: choose one"),
    "loss for another model kind": (
        ["loss._target_=tests.fakes.CrossEncoderOnlyLoss"],
        _nothing,
        "trains cross_encoder models, but the model is a bi_encoder",
    ),
    "loss for other batches": (
        ["loss._target_=tests.fakes.BiEncoderListLoss"],
        _nothing,
        "loss 'bi_encoder_lists' needs ranked lists (q, [d]*n, targets) batches",
    ),
    "model for another loss": (["model=tiny_revela"], _nothing, "loss 'infonce' trains bi_encoder models"),
    "loss that cannot be imported": (["loss._target_=retrieval_exp.losses.Nothing"], _nothing, "cannot be imported"),
    "evaluation without a model": (["experiment=zero_shot", "~model"], _nothing, "needs a model, but model is null"),
    "agreement without a teacher": (["agreement={ks:[1]}"], _nothing, "agreement compares a trained student"),
    "negative batch size": (["trainer.batch_size=-4"], _nothing, "trainer.batch_size=-4 is out of range: it must be"),
    "zero batch size": (["trainer.batch_size=0"], _nothing, "trainer.batch_size=0 is out of range: it must be >= 1"),
    "negative epochs": (["trainer.epochs=-1"], _nothing, "trainer.epochs=-1 is out of range: it must be >= 1"),
    "zero steps": (["trainer.max_steps=0"], _nothing, "trainer.max_steps=0 is out of range: it must be >= 1"),
    "zero gradient norm": (["trainer.max_grad_norm=0"], _nothing, "trainer.max_grad_norm=0 is out of range: it mu"),
    "text for a count": (["trainer.log_every=abc"], _nothing, "trainer.log_every='abc' is not an integer"),
    "fraction for a count": (["trainer.grad_accum=1.5"], _nothing, "trainer.grad_accum=1.5 is not an integer"),
    "null for a count": (["trainer.batch_size=null"], _nothing, "trainer.batch_size cannot be null: give an integer"),
    "unknown trainer setting": (["+trainer.lr=1e-5"], _nothing, "trainer.lr is not a setting of trainer"),
    "zero temperature": (["loss.temperature=0"], _nothing, "loss.temperature=0 is out of range: it must be > 0"),
    "text for a temperature": (["loss.temperature=abc"], _nothing, "loss.temperature='abc' is not a number"),
    "unknown loss setting": (["+loss.margin=0.3"], _nothing, "loss.margin is not a setting of loss (InfoNCE)"),
    "unknown error function": (
        ["loss=adaptive_margin", "loss.error_fn=l3"],
        _nothing,
        "loss.error_fn='l3' is not one of",
    ),
    "text for a learning rate": (["optim.lr=abc"], _nothing, "optim.lr='abc' is not a number"),
    "negative learning rate": (["optim.lr=-1"], _nothing, "optim (torch.optim.AdamW) refuses its settings: Invalid"),
    "beta out of range": (["+optim.betas=[0.9,2.0]"], _nothing, "refuses its settings: Invalid beta parameter"),
    "unknown decay": (["scheduler.decay=step"], _nothing, "scheduler.decay='step' is not one of linear"),
    "negative warmup": (["scheduler.warmup=-1"], _nothing, "scheduler.warmup=-1 is out of range: it must be >= 0"),
    "negative negatives": (["data.train.negatives=-1"], _nothing, "data.train.negatives=-1 is out of range"),
    "zero mining depth": (["data.train.depth=0"], _nothing, "data.train.depth=0 is out of range: it must be >= 1"),
    "unknown sampler setting": (["+data.train.shuffle=true"], _nothing, "data.train.shuffle is not a setting of"),
    "miner setting out of range": (["+data.train.miner.b=2"], _nothing, "data.train.miner.b=2 is out of range"),
    "selection out of range": (
        [*TEACHER_PAIRS, "data.train.selection.percentile=100"],
        _nothing,
        "data.train.selection.percentile=100 is out of range: it must be < 100",
    ),
    "selection rule that cannot be imported": (
        [*TEACHER_PAIRS, "data.train.selection._target_=no.Rule"],
        _nothing,
        "data.train.selection._target_='no.Rule' cannot be imported",
    ),
    "zero evaluation depth": (["eval.depth=0"], _nothing, "eval.depth=0 is out of range: it must be >= 1"),
    "unknown measure": (["eval.measures=[nDCG@ten]"], _nothing, "ir_measures cannot parse"),
    "unknown eval setting": (["+eval.cutoff=10"], _nothing, "eval.cutoff is not a setting of eval"),
    "missing first-stage run": (
        ["retriever=rerank_run", "retriever.first_stage.path={inputs}/gone.run"],
        _nothing,
        "gone.run' does not exist: give the path of a run file",
    ),
    "corrupt TREC run": (
        [RERANK_RUN, "retriever.first_stage.path={inputs}/bad.run"],
        _lines("bad.run", "t1 Q0 d1 1 0.5 x\nt1 Q0 d2\n"),
        "bad.run', line 2, is not a TREC run line 'qid Q0 docid rank score tag' (3 fields)",
    ),
    "corrupt gzip run": (
        [RERANK_RUN, "retriever.first_stage.path={inputs}/bad.run.gz"],
        _lines("bad.run.gz", "t1 Q0 d1 1 0.5 x\n"),
        "bad.run.gz' cannot be read (Not a gzipped file",
    ),
    "corrupt parquet run": (
        [RERANK_RUN, "retriever.first_stage.path={inputs}/run.parquet"],
        _lines("run.parquet", "t1 Q0 d1 1 0.5 x\n"),
        "run.parquet' is not a readable parquet file",
    ),
    "parquet that is no run": (
        [RERANK_RUN, "retriever.first_stage.path={inputs}/run.parquet"],
        _parquet({"qid": ["t1"], "passage": ["d1"], "score": [1.0]}),
        "has no doc_id column (one of doc_id, docid, docno, corpus-id): it is not a run",
    ),
    "unknown search backend": (["retriever.backend=annoy"], _nothing, "retriever.backend='annoy' is not one of"),
    "unknown faiss index": (
        ["retriever.backend=faiss", "retriever.faiss_index=HNSWx"],
        _nothing,
        "retriever.faiss_index='HNSWx' is not an index faiss can build",
    ),
    "unknown vector dtype": (["retriever.dtype=int8"], _nothing, "retriever.dtype='int8' is not one of float32"),
    "zero re-ranking depth": (["retriever=rerank", "retriever.depth=0"], _nothing, "retriever.depth=0 is out of range"),
    "unknown precision": (["hardware.precision=fp8"], _nothing, "hardware.precision='fp8' is not one of fp32, bf16"),
    "zero encoding batch": (["hardware.encode_batch_size=0"], _nothing, "hardware.encode_batch_size=0 is out of"),
    "unknown store scheme": (["tracking.uri=mongo://host/db"], _nothing, "tracking.uri='mongo://host/db' is not an"),
    "a registered model that is not logged": (
        ["tracking.register_as=tiny", "tracking.log_model=false"],
        _nothing,
        "tracking.register_as=tiny registers the trained model's artifact, which this run does not log",
    ),
    "preset that cannot run as it is": (
        ["experiment=rank_distillm/scifact_stage2"],
        _nothing,
        "init must be set: add",
    ),
    "folder that is not a BEIR folder": (
        ["data.test=nobeir", "+data.register.nobeir={folder: '{inputs}'}"],
        _nothing,
        "cannot register 'nobeir': missing",
    ),
    "malformed corpus line": (
        _collection("corpusline"),
        _append("corpus.jsonl", '{"_id": "x", "text": "cut off\n'),
        "corpus.jsonl:31 is not a JSON object with an _id",
    ),
    "document without an id": (
        _collection("docid"),
        _append("corpus.jsonl", '{"title": "", "text": "no id"}\n'),
        "corpus.jsonl:31 is not a JSON object with an _id ('_id')",
    ),
    "qrels judging an unknown document": (
        _collection("unknowndoc"),
        _append("qrels/test.tsv", "t1\tno-such-doc\t1\n"),
        "judges document 'no-such-doc', which corpus.jsonl does not have",
    ),
    "qrels judging an unknown query": (
        _collection("unknownquery"),
        _append("qrels/test.tsv", "no-such-query\td1\t1\n"),
        "judges query 'no-such-query', which queries.jsonl does not have",
    ),
    "malformed qrels line": (
        _collection("qrelsline"),
        _append("qrels/test.tsv", "t1 d1 1\n"),
        "is not 'query-id<TAB>corpus-id<TAB>score' (score an integer)",
    ),
    "corrupt shipped first stage": (
        _collection("scoreddocs"),
        _folder(lambda folder: (folder / "scoreddocs" / "test.run").write_text("t1 d1\n")),
        "scoreddocs/test.run', line 1, is not a TREC run line",
    ),
    "tuning on a test measure": (
        ["validation=dev", "objective=nDCG@10"],
        _nothing,
        "objective=nDCG@10 is a test measure: tune on validation, one of val/R@100, val/RR@10, val/nDCG@10",
    ),
    "tuning without validation": (["objective=val/nDCG@10"], _nothing, "but validation is null: add validation=dev"),
    "validating on the test collection": (
        ["validation=dev", "validation.dataset=tiny/test"],
        _nothing,
        "validation.dataset=tiny/test is a test collection of this run: validate on a dev split",
    ),
    "held-out share out of range": (
        ["validation=dev", "validation.held_out=1"],
        _nothing,
        "validation.held_out=1 is out of range: it must be < 1",
    ),
    "validation without training": (["validation=dev", "train=false"], _nothing, "validation runs during training"),
    "held out of a split without queries": (
        ["validation=dev", "data.train.dataset=beir/scifact"],
        _nothing,
        "cannot hold queries out of 'beir/scifact', which has no queries and qrels",
    ),
}


@pytest.mark.parametrize(("overrides", "make_inputs", "message"), CASES.values(), ids=CASES.keys())
def test_bad_input_is_one_line_before_anything_is_written(
    tmp_path: Path, overrides: list[str], make_inputs: Callable[[Path], None], message: str
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    make_inputs(inputs)
    cfg = compose_config(
        *TINY,
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        f"tracking.artifact_root={tmp_path}/artifacts",
        f"paths.cache={tmp_path}/cache",
        *(override.replace("{inputs}", str(inputs)) for override in overrides),
    )
    with pytest.raises(UserError) as failure:
        check(cfg)
    assert message in str(failure.value) and "\n" not in str(failure.value), str(failure.value)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["inputs"]  # no store, no cache, no run folder


def test_a_pool_folder_may_judge_documents_outside_its_pool(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    shutil.copytree(TINY_DATA, folder)
    with (folder / "qrels" / "test.tsv").open("a") as qrels:
        qrels.write("t1\toutside-the-pool\t1\n")
    register_beir_folder("pooled/test", folder, "test", pool=True)
    with pytest.raises(UserError, match="judges document 'outside-the-pool'"):
        register_beir_folder("unpooled/test", folder, "test")


def test_a_valid_gzip_run_passes_the_check(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "run.gz", "wt") as run:
        run.write("t1 Q0 d1 1 0.5 x\n")
    assert RunFile(str(tmp_path / "run.gz")).search(None, {"t1": ""}, 1) == {"t1": {"d1": 0.5}}
