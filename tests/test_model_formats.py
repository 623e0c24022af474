"""Saved folders are sentence-transformers models that give the suite's vectors and scores, and a sentence-transformers
folder or hub id brings its own pooling, normalisation, lengths and prompts into the suite."""

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient
from sentence_transformers import CrossEncoder as SentenceTransformersCrossEncoder
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Normalize, Transformer
from sentence_transformers.sentence_transformer.modules import Pooling
from transformers import AutoTokenizer, ElectraConfig, ElectraModel, RobertaConfig, RobertaModel

from retrieval_exp.errors import UserError
from retrieval_exp.models.bi_encoder import BiEncoder
from retrieval_exp.models.cross_encoder import CrossEncoder
from retrieval_exp.models.st_format import declared_settings
from retrieval_exp.tracking.lifecycle import RUN_ID_FILE
from retrieval_exp.tracking.model_card import write_model_card
from tests.conftest import REPO, compose_config, launch

QUERIES = ["vaccines train the immune system", "measles"]
DOCUMENTS = ["sea ice melts in summer", "the immune system learns from vaccines", "measles spreads"]
BI_ENCODERS = {
    "mean": {"pooling": "mean"},
    "cls, dot product, prefixes": {"pooling": "cls", "normalize": False, "query_prefix": "q: ", "doc_prefix": "d: "},
    "pooler": {"pooling": "pooler"},
    "mean with a projection head": {"pooling": "mean", "projection": 8},
    "pooler with a projection head": {"pooling": "pooler", "projection": 8, "normalize": False},
}


def vectors(model: BiEncoder) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return model.embed(QUERIES, "query", 2), model.embed(DOCUMENTS, "doc", 2)


def assert_same_vectors(ours: tuple[torch.Tensor, torch.Tensor], folder: Path) -> None:
    theirs = SentenceTransformer(str(folder), device="cpu")
    encoded = torch.tensor(theirs.encode_query(QUERIES)), torch.tensor(theirs.encode_document(DOCUMENTS))
    for mine, other in zip(ours, encoded):
        assert torch.nn.functional.cosine_similarity(mine, other).min() >= 0.99999
        assert torch.allclose(mine, other, atol=1e-5)  # lengths too: unnormalised vectors are compared as they are


@pytest.mark.parametrize("settings", BI_ENCODERS.values(), ids=BI_ENCODERS.keys())
def test_a_saved_bi_encoder_is_a_sentence_transformer(tmp_path: Path, tiny_bert: Path, settings: dict) -> None:
    model = BiEncoder(str(tiny_bert), query_length=6, doc_length=12, **settings).eval()
    model.save(tmp_path / "model")
    assert_same_vectors(vectors(model), tmp_path / "model")
    reloaded = BiEncoder(str(tmp_path / "model")).eval()  # the folder brings every setting back
    assert (reloaded.pooling, reloaded.normalize, reloaded.lengths) == (model.pooling, model.normalize, model.lengths)
    assert all(torch.equal(a, b) for a, b in zip(vectors(reloaded), vectors(model)))


def test_an_eos_pooled_decoder_is_a_sentence_transformer(tmp_path: Path, tiny_llama: Path) -> None:
    model = BiEncoder(str(tiny_llama), pooling="eos", query_length=4, query_prefix="query: ", doc_prefix="passage: ")
    model.eval().save(tmp_path / "model")
    assert_same_vectors(vectors(model), tmp_path / "model")  # the truncated query still ends with EOS there
    reloaded = BiEncoder(str(tmp_path / "model"))
    tokens = reloaded.tokenize(QUERIES, "query")["input_ids"].tolist()
    assert [row.count(reloaded.tokenizer.eos_token_id) for row in tokens] == [1, 1]  # not appended twice


def test_a_revela_retriever_is_saved_as_a_sentence_transformer(tmp_path: Path) -> None:
    revela = instantiate(compose_config("model=tiny_revela").model).eval()
    revela.save(tmp_path / "model")
    assert_same_vectors(vectors(revela.retriever), tmp_path / "model")


def sentence_transformers_folder(tiny_bert: Path, folder: Path, pooling: str, normalize: bool) -> SentenceTransformer:
    transformer = Transformer(str(tiny_bert), max_seq_length=12)
    modules = [transformer, Pooling(transformer.get_embedding_dimension(), pooling)]
    prompts = {"query": "question: ", "document": "answer: "}
    model = SentenceTransformer(modules=[*modules, *([Normalize()] if normalize else [])], prompts=prompts)
    model.save(str(folder))
    return model


def test_a_sentence_transformers_folder_brings_its_settings(tmp_path: Path, tiny_bert: Path) -> None:
    sentence_transformers_folder(tiny_bert, tmp_path / "st", "cls", normalize=False)
    model = BiEncoder(str(tmp_path / "st")).eval()
    assert (model.pooling, model.normalize, model.lengths) == ("cls", False, {"query": 12, "doc": 12})
    assert model.prefixes == {"query": "question: ", "doc": "answer: "}
    assert_same_vectors(vectors(model), tmp_path / "st")


def test_a_config_that_contradicts_the_folder_says_so(
    tmp_path: Path, tiny_bert: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sentence_transformers_folder(tiny_bert, tmp_path / "st", "cls", normalize=True)
    with caplog.at_level(logging.WARNING):
        model = BiEncoder(str(tmp_path / "st"), pooling="mean", normalize=True)
    assert model.pooling == "mean"  # the config wins
    [line] = [record.getMessage() for record in caplog.records if "declares" in record.getMessage()]
    assert line == f"the config's pooling='mean' overrides the 'cls' that {tmp_path / 'st'} declares"


def test_a_pooling_the_suite_lacks_is_one_line(tmp_path: Path, tiny_bert: Path) -> None:
    sentence_transformers_folder(tiny_bert, tmp_path / "st", "max", normalize=True)
    with pytest.raises(UserError, match=r"pools with max, which the suite does not have"):
        BiEncoder(str(tmp_path / "st"))


def test_a_hub_model_declares_its_settings() -> None:
    assert declared_settings("sentence-transformers/all-MiniLM-L6-v2") == {
        "normalize": True,
        "pooling": "mean",
        "query_length": 256,
        "doc_length": 256,
    }


def tiny_electra(tiny_bert: Path, folder: Path) -> Path:
    """An ELECTRA-shaped tiny encoder (16-wide embeddings projected to 32) with the tiny BERT's vocabulary."""
    vocab = AutoTokenizer.from_pretrained(tiny_bert)
    config = ElectraConfig(vocab_size=len(vocab), embedding_size=16, hidden_size=32, num_hidden_layers=2)
    config.update({"num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64})
    ElectraModel(config).save_pretrained(folder)
    vocab.save_pretrained(folder)
    return folder


def tiny_roberta(tiny_bert: Path, folder: Path) -> Path:
    """A RoBERTa-shaped tiny encoder (positions offset past the padding id, a pooler) with the tiny BERT's vocabulary
    (two token types, which that tokenizer emits for pairs)."""
    vocab = AutoTokenizer.from_pretrained(tiny_bert)
    config = RobertaConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, pad_token_id=0)
    config.update({"num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 80})
    config.update({"type_vocab_size": 2})
    RobertaModel(config).save_pretrained(folder)
    vocab.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("shape", ["bert", "electra", "roberta"])
@pytest.mark.parametrize("linear_bias", [True, False])
def test_a_saved_cross_encoder_scores_the_same_in_sentence_transformers(
    tmp_path: Path, tiny_bert: Path, shape: str, linear_bias: bool
) -> None:
    torch.manual_seed(0)
    encoder = {"bert": lambda _, folder: shutil.copytree(tiny_bert, folder), "electra": tiny_electra}
    encoder["roberta"] = tiny_roberta
    base = Path(encoder[shape](tiny_bert, tmp_path / shape))
    model = CrossEncoder(str(base), query_length=6, doc_length=12, linear_bias=linear_bias).eval()
    model.save(tmp_path / "model")
    pairs = [(q, d) for q in range(len(QUERIES)) for d in range(len(DOCUMENTS))]
    with torch.no_grad():
        ours = model.score_pairs(dict(enumerate(QUERIES)), dict(enumerate(DOCUMENTS)), pairs, 4)
    theirs = SentenceTransformersCrossEncoder(str(tmp_path / "model"), device="cpu")
    scores = theirs.predict([(QUERIES[q], DOCUMENTS[d]) for q, d in pairs])
    assert torch.allclose(torch.tensor(ours), torch.tensor(scores), atol=1e-5)
    reloaded = CrossEncoder(str(tmp_path / "model"), query_length=6, doc_length=12, linear_bias=linear_bias).eval()
    with torch.no_grad():
        assert reloaded.score_pairs(dict(enumerate(QUERIES)), dict(enumerate(DOCUMENTS)), pairs, 4) == ours


def test_export_writes_a_hub_ready_folder_from_the_store(tmp_path: Path) -> None:
    done = launch(tmp_path, "trainer.max_steps=2", "tracking.register_as=tiny-retriever")
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = (tmp_path / "run" / RUN_ID_FILE).read_text()
    [version] = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_model_versions("name='tiny-retriever'")
    assert version.run_id == run_id and version.source == f"runs:/{run_id}/model"
    assert (tmp_path / "run" / "model" / "README.md").is_file()  # the run's own folder has its card
    saved = BiEncoder(str(tmp_path / "run" / "model")).eval()
    expected = vectors(saved)
    shutil.rmtree(tmp_path / "run")  # the model now comes from the store's artifacts
    command = [sys.executable, "-m", "retrieval_exp.export", run_id, str(tmp_path / "hub"), "--name", "me/tiny"]
    exported = subprocess.run(
        [*command, "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"], cwd=REPO, capture_output=True, text=True
    )
    assert exported.returncode == 0, exported.stderr[-3000:]
    card = (tmp_path / "hub" / "README.md").read_text()
    assert card.startswith("---\nbase_model: ") and 'SentenceTransformer("me/tiny")' in card
    assert f"MLflow run `{run_id}`" in card and "| nDCG_at_10 | " in card and "trainer.max_steps=2" in card
    assert_same_vectors(expected, tmp_path / "hub")
    again = subprocess.run(
        [*command, "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"], capture_output=True, text=True
    )
    assert (
        again.returncode == 2
        and again.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'hub'} is not empty: give a new folder"
    )


def test_a_cross_encoder_card_says_how_to_load_it(tmp_path: Path, tiny_bert: Path) -> None:
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run = client.create_run(client.create_experiment("cards", artifact_location=str(tmp_path / "artifacts")))
    for key, value in {"model.name_or_path": "google/electra-base-discriminator", "loss._target_": "RankNet"}.items():
        client.log_param(run.info.run_id, key, value)
    client.set_tag(run.info.run_id, "method", "ranknet")
    client.log_metric(run.info.run_id, "nDCG_at_10", 0.5)
    client.log_metric(run.info.run_id, "train/steps", 3)
    CrossEncoder(str(tiny_bert)).save(tmp_path / "model")
    card = write_model_card(tmp_path / "model", client.get_run(run.info.run_id)).read_text()
    assert '"pipeline_tag": "text-ranking"' not in card and 'pipeline_tag: "text-ranking"' in card
    assert 'CrossEncoder("' in card and "AutoModelForSequenceClassification` has\nanother head" in card
    assert "| loss | `RankNet` |" in card and "| nDCG_at_10 | 0.5000 |" in card and "train/steps" not in card
