"""The cross-encoder (tokenisation, head, save and load) and re-ranking a first stage with it."""

from pathlib import Path

import pytest
import torch

from retrieval_exp.batches import RankedList
from retrieval_exp.data import irds
from retrieval_exp.data.local import register_all
from retrieval_exp.errors import UserError
from retrieval_exp.hardware import Hardware
from retrieval_exp.models.bi_encoder import BiEncoder
from retrieval_exp.models.cross_encoder import CrossEncoder
from retrieval_exp.retrieval.rerank import Reranker
from retrieval_exp.retrieval.run import DatasetRun, RunFile, read_trec
from tests.conftest import TINY_DATA, compose_config

TEST_RUN = TINY_DATA / "scoreddocs" / "test.run"


@pytest.fixture(autouse=True, scope="module")
def tiny_registered() -> None:
    register_all(compose_config("data=tiny").data.register)


@pytest.fixture
def model(tiny_bert: Path) -> CrossEncoder:
    torch.manual_seed(0)
    return CrossEncoder(str(tiny_bert), query_length=3, doc_length=5)


def test_query_and_document_are_truncated_separately(model: CrossEncoder) -> None:
    long_query = "how do vaccines train the immune system"
    tokens = model.tokenize([long_query, "sleep"], ["vaccines train the immune system against viruses", "sleep"])
    cls, sep = model.tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]"])
    first = tokens["input_ids"][0].tolist()
    assert first[0] == cls and first.count(sep) == 2
    boundary = first.index(sep)
    assert boundary - 1 == 3 and len(first) - boundary - 2 == 5  # 3 query tokens, 5 document tokens
    assert tokens["token_type_ids"][0].tolist() == [0] * 5 + [1] * 6
    assert tokens["attention_mask"][1].tolist() == [1, 1, 1, 1, 1] + [0] * 6  # [CLS] sleep [SEP] sleep [SEP] + pad


def test_lists_score_as_their_pairs(model: CrossEncoder) -> None:
    lists = [RankedList("sleep", ("sleep well", "enzymes"), (1.0, 0.0)), RankedList("ice", ("sea ice", "x"), (2, 1))]
    model.eval()
    batch = model.collate(lists)
    scores = model.training_output(batch).scores
    assert scores.shape == (2, 2) and batch.targets.tolist() == [[1.0, 0.0], [2.0, 1.0]]
    pairs = model.score_pairs(
        {"a": "sleep", "b": "ice"}, {"1": "sleep well", "2": "sea ice"}, [("b", "2"), ("a", "1")], 1
    )
    assert pairs == pytest.approx([scores[1, 0].item(), scores[0, 0].item()], abs=1e-5)


def test_a_saved_cross_encoder_scores_the_same_after_loading(model: CrossEncoder, tmp_path: Path) -> None:
    torch.nn.init.normal_(model.head.weight)
    model.save(tmp_path / "model")
    loaded = CrossEncoder(str(tmp_path / "model"), query_length=3, doc_length=5)
    queries, docs, pairs = {"q": "sleep"}, {"d": "sleep well at night", "e": "sea ice"}, [("q", "d"), ("q", "e")]
    assert loaded.score_pairs(queries, docs, pairs, 2) == pytest.approx(model.score_pairs(queries, docs, pairs, 2))
    with pytest.raises(UserError, match="was saved with linear_bias=True: set model.linear_bias so"):
        CrossEncoder(str(tmp_path / "model"), linear_bias=False)
    with pytest.raises(UserError, match="holds a cross_encoder but the model config builds a bi_encoder"):
        BiEncoder(str(tmp_path / "model"))


def test_a_bi_encoder_folder_is_not_loaded_as_a_cross_encoder(tiny_bert: Path, tmp_path: Path) -> None:
    BiEncoder(str(tiny_bert)).save(tmp_path / "bi")
    with pytest.raises(UserError, match="holds a bi_encoder but the model config builds a cross_encoder"):
        CrossEncoder(str(tmp_path / "bi"))


def test_reranking_keeps_exactly_the_candidate_set(model: CrossEncoder) -> None:
    queries = irds.queries("tiny/test")
    corpus = irds.corpus("tiny/test")
    reranker = Reranker(model, Hardware(), RunFile(str(TEST_RUN)), depth=2)
    reranked = reranker.search(corpus, queries, depth=1000)
    first_stage = read_trec(TEST_RUN)
    expected = {q: set(sorted(docs, key=lambda d: -docs[d])[:2]) for q, docs in first_stage.items() if q in queries}
    assert {q: set(docs) for q, docs in reranked.items()} == expected
    assert {q: set(docs) for q, docs in reranker.candidates.items()} == expected
    assert reranked != reranker.candidates  # the model's scores, not the first stage's


def test_dataset_scoreddocs_serve_as_a_first_stage() -> None:
    served = DatasetRun("tiny/test").search(None, {"t1": "", "t2": ""}, depth=1)
    assert served == {"t1": {"vaccine2": pytest.approx(5.8666)}, "t2": {"climate2": pytest.approx(4.7095)}}


def test_a_missing_run_file_is_downloaded_from_its_url(tmp_path: Path) -> None:
    target = tmp_path / "runs" / "first.run"
    served = RunFile(str(target), url=TEST_RUN.as_uri()).search(None, {"t1": ""}, depth=1)
    assert target.read_text() == TEST_RUN.read_text() and list(served["t1"]) == ["vaccine2"]
    unreachable = RunFile(str(tmp_path / "gone.run"), url=(tmp_path / "nowhere.run").as_uri())
    with pytest.raises(UserError, match="gone.run' is missing and file://.* cannot be reached"):
        unreachable.search(None, {"t1": ""}, depth=1)
    assert not list(tmp_path.glob("gone.run*"))  # nothing half-written
