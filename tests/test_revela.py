"""Method 4, Revela, and its REPLUG baseline on the tiny BERT retriever and tiny Llama LM: the paper's invariants,
hand-computed losses, the chunk groups, and the presets run through launch.py."""

import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from transformers import AutoModelForCausalLM

from retrieval_exp.data import irds
from retrieval_exp.data.chunk_groups import ChunkGroups
from retrieval_exp.data.local import register_all
from retrieval_exp.errors import UserError
from retrieval_exp.losses.lm_supervised import ReplugLoss, RevelaLoss
from retrieval_exp.models.bi_encoder import BiEncoder
from tests.conftest import TINY_DATA, compose_config, launch
from tests.test_launch import runs

TINY_REVELA = ["model=tiny_revela", "data=tiny_chunk_groups"]


def corpus_texts() -> list[str]:
    return [json.loads(line)["text"] for line in (TINY_DATA / "corpus.jsonl").read_text().splitlines()]


def tiny_groups(count: int, size: int = 4) -> list[tuple[str, ...]]:
    texts = corpus_texts()
    return [tuple(texts[g * size : (g + 1) * size]) for g in range(count)]


@pytest.fixture(scope="module")
def model():  # noqa: ANN201
    torch.manual_seed(0)
    return instantiate(compose_config(*TINY_REVELA).model)


def test_zero_weights_give_exactly_the_plain_lm_loss(model) -> None:  # noqa: ANN001
    batch = model.collate(tiny_groups(2))
    mixed, plain = model.training_output(batch).lm_losses(torch.zeros(8, 8))
    stock = AutoModelForCausalLM.from_pretrained(os.environ["RETRIEVAL_EXP_TINY_LLAMA"], attn_implementation="sdpa")
    tokens = batch.lm_tokens
    labels = tokens["input_ids"].masked_fill(tokens["attention_mask"] == 0, -100)
    assert mixed.item() == plain.item() == stock(**tokens, labels=labels).loss.item()


def test_similarities_exclude_the_diagonal_and_other_groups(model) -> None:  # noqa: ANN001
    output = model.training_output(model.collate(tiny_groups(2)))
    allowed = torch.isfinite(output.similarities)
    expected = torch.block_diag(torch.ones(4, 4), torch.ones(4, 4)).bool() & ~torch.eye(8, dtype=torch.bool)
    assert torch.equal(allowed, expected)
    weights = RevelaLoss(temperature=0.1).attention_weights(output.similarities)
    assert torch.equal(weights.diagonal(), torch.zeros(8)) and torch.equal(weights[~expected], torch.zeros(8 * 8 - 24))
    assert torch.allclose(weights.sum(-1), torch.ones(8))


def test_candidates_keep_each_rows_best_chunks() -> None:
    similarities = torch.tensor([[float("-inf"), 0.9, 0.5, 0.1], [0.2, float("-inf"), 0.3, 0.8]])
    weights = RevelaLoss(temperature=1.0, candidates=2).attention_weights(similarities)
    assert weights[0].tolist() == pytest.approx([0, 1 / (1 + math.exp(-0.4)), 1 / (1 + math.exp(0.4)), 0])
    assert (weights[1] > 0).tolist() == [False, False, True, True]


def retriever_gradients(model) -> list[torch.Tensor]:  # noqa: ANN001
    return [p.grad for p in model.retriever.parameters() if p.grad is not None and p.grad.abs().sum() > 0]


def test_the_retriever_learns_only_through_the_attention_weights() -> None:
    model = instantiate(compose_config(*TINY_REVELA).model, freeze_lm=False)  # the LM trains: the loss has a graph
    batch = model.collate(tiny_groups(1))
    loss = RevelaLoss(temperature=0.1)
    output = model.training_output(batch)
    output.lm_losses(loss.attention_weights(output.similarities).detach())[0].backward()
    assert retriever_gradients(model) == [] and any(p.grad is not None for p in model.lm.parameters())
    model.zero_grad()
    loss.compute_loss(model.training_output(batch), batch).backward()
    assert retriever_gradients(model)
    assert set(loss.terms) == {"lm_inbatch", "lm_plain"}


def test_frozen_lm_gets_no_gradient_and_lora_trains_adapters_only(tiny_bert: Path, tiny_llama: Path) -> None:
    cfg = compose_config(*TINY_REVELA)
    frozen = instantiate(cfg.model)
    assert not frozen.lm_trains
    lora = {"r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"]}
    adapted = instantiate(
        cfg.model, freeze_lm=False, lm_lora=lora, retriever_lora={**lora, "target_modules": ["query", "value"]}
    )
    trainable = {name for name, p in adapted.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert any(name.startswith("lm.") for name in trainable) and any(
        name.startswith("retriever.") for name in trainable
    )
    with pytest.raises(InstantiationException, match="freeze_lm=true trains no LM weights"):
        instantiate(cfg.model, lm_lora=lora)


def test_saving_merges_lora_into_a_bi_encoder_folder(tmp_path: Path) -> None:
    cfg = compose_config(*TINY_REVELA)
    lora = {"r": 2, "lora_alpha": 4, "target_modules": ["query", "value"], "init_lora_weights": False}
    model = instantiate(cfg.model, retriever_lora=lora)
    texts = corpus_texts()[:5]
    before = model.embed(texts, "doc", 4)
    model.save(tmp_path / "model")
    saved = BiEncoder(str(tmp_path / "model"), pooling="mean", doc_length=32)
    assert torch.allclose(saved.embed(texts, "doc", 4), before, atol=1e-5)


def test_replug_loss_is_the_hand_computed_kl() -> None:
    similarities = torch.tensor([[float("-inf"), 0.5, 0.1, 0.3], [0.2, float("-inf"), 0.4, 0.0]])
    log_likelihoods = {0: [-2.0, -1.0], 1: [-3.0, -1.0]}  # of each row's two best candidates, in rank order
    output = SimpleNamespace(
        similarities=similarities,
        continuation_log_likelihoods=lambda best: torch.tensor([log_likelihoods[i] for i in range(len(best))]),
    )
    value = ReplugLoss(candidates=2, temperature=0.1, lm_temperature=1.0).compute_loss(output, None)
    expected = 0.0
    for row, (s1, s2) in enumerate([(0.5, 0.3), (0.4, 0.2)]):
        p = [1 / (1 + math.exp(-(s1 - s2) / 0.1)), 1 / (1 + math.exp((s1 - s2) / 0.1))]
        l1, l2 = log_likelihoods[row]
        q = [1 / (1 + math.exp(-(l1 - l2))), 1 / (1 + math.exp(l1 - l2))]
        expected += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)) / 2
    assert value.item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(UserError, match="candidates=4"):
        ReplugLoss(candidates=4).compute_loss(output, None)


def test_continuation_likelihood_scores_the_second_half_after_the_candidate(model) -> None:  # noqa: ANN001
    batch = model.collate(tiny_groups(1))
    scores = model.continuation_log_likelihoods(batch.lm_chunks, torch.tensor([[1, 2], [0, 3], [1, 0], [2, 1]]))
    chunk, candidate = batch.lm_chunks[0], batch.lm_chunks[2]
    half = len(chunk) // 2
    ids = torch.tensor([model.lm_prefix + candidate + chunk])
    with torch.no_grad():
        log_probs = model.lm(input_ids=ids).logits[0, :-1].log_softmax(-1)
    start = len(model.lm_prefix + candidate) + half
    expected = sum(log_probs[position - 1, ids[0, position]].item() for position in range(start, ids.shape[1]))
    assert scores.shape == (4, 2) and scores[0, 1].item() == pytest.approx(expected, abs=1e-4)


def test_eos_pooling_ends_every_text_with_eos_and_pools_it(tiny_llama: Path) -> None:
    encoder = BiEncoder(str(tiny_llama), pooling="eos", query_length=4)
    tokens = encoder.tokenize(["vaccines train the immune system", "measles"], "query")
    eos = encoder.tokenizer.eos_token_id
    lengths = tokens["attention_mask"].sum(1).tolist()
    assert lengths == [4, 2] and [row[n - 1] for row, n in zip(tokens["input_ids"].tolist(), lengths)] == [eos, eos]
    hidden = encoder.encoder(**tokens).last_hidden_state
    assert torch.allclose(encoder(tokens), torch.nn.functional.normalize(hidden[[0, 1], [3, 1]], dim=-1), atol=1e-6)


def write_jsonl(path: Path, rows: list) -> Path:  # noqa: ANN001
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_jsonl_groups_take_the_first_texts_shuffled_under_the_seed(tmp_path: Path) -> None:
    rows = [[f"chunk {i}.{j}" for j in range(5)] for i in range(6)] + [{"src": "wiki", "text": ["a", "b", "c", "d"]}]
    path = write_jsonl(tmp_path / "groups.jsonl", rows)
    groups = ChunkGroups(str(path), group_size=4, seed=42)
    assert len(groups) == 7 and all(len(group) == 4 for group in groups.epoch(0))
    assert {frozenset(g) for g in groups.epoch(0)} >= {frozenset({"a", "b", "c", "d"}), frozenset(rows[0][:4])}
    assert list(ChunkGroups(str(path), group_size=4, seed=42).epoch(0)) == list(groups.epoch(0))
    assert list(ChunkGroups(str(path), group_size=4, seed=7).epoch(0)) != list(groups.epoch(0))
    assert list(groups.epoch(1)) != list(groups.epoch(0)) and sorted(groups.epoch(1)) == sorted(groups.epoch(0))
    with pytest.raises(UserError, match="fewer than data.train.group_size=5"):
        len(ChunkGroups(str(path), group_size=5))


def build_groups(cache: Path, seed: int) -> list[tuple[str, ...]]:
    cfg = compose_config(*TINY_REVELA, f"seed={seed}", f"data.train.cache={cache}")
    register_all(cfg.data.register)
    return list(instantiate(cfg.data.train).epoch(0))


def test_corpus_groups_are_bm25_neighbours_and_deterministic_under_a_seed(tmp_path: Path) -> None:
    first = build_groups(tmp_path / "a", seed=1)
    assert first == build_groups(tmp_path / "b", seed=1)
    assert first != build_groups(tmp_path / "c", seed=2)
    assert 0 < len(first) <= 8 and all(  # seeds with too few BM25 neighbours are dropped
        len(group) == 4 and len(set(group)) == 4 for group in first
    )
    [built] = (tmp_path / "a").glob("*.jsonl")
    line = json.loads(built.read_text().splitlines()[0])
    assert line["src"] == "tiny/train" and line["seed"].count("#") == 1
    text = " ".join(irds.corpus("tiny/train").texts)
    assert all(chunk in text for group in first for chunk in group)  # chunks are pieces of the documents


@pytest.mark.parametrize("loss", ["revela", "replug"])
def test_scifact_preset_trains_and_evaluates_the_retriever(tmp_path: Path, loss: str) -> None:
    done = launch(
        tmp_path,
        "experiment=revela/scifact",
        *TINY_REVELA,
        f"loss={loss}",
        "loss.candidates=2",
        "trainer.max_steps=2",
        "tracking.experiment=tiny",
        tiny=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [run] = runs(tmp_path)
    assert run.info.status == "FINISHED" and run.data.tags["method"] == loss and run.data.metrics["train/steps"] == 2
    assert run.data.metrics["data/groups"] > 0  # the sampler's report, logged for every sampler
    assert (tmp_path / "run" / "run.trec").is_file() and (tmp_path / "run" / "model" / "config.json").is_file()
    if loss == "revela":
        assert {"train/lm_inbatch", "train/lm_plain"} <= set(run.data.metrics)


def test_paper_preset_runs_tiny_with_lora_on_both_models(tmp_path: Path) -> None:
    lora = "{r:4,lora_alpha:8,lora_dropout:0.1,target_modules:[q_proj,v_proj]}"
    done = launch(
        tmp_path,
        "experiment=revela/paper",
        "hardware=cpu",
        "model.name_or_path=${oc.env:RETRIEVAL_EXP_TINY_LLAMA}",
        "model.lm=${oc.env:RETRIEVAL_EXP_TINY_LLAMA}",
        f"model.retriever_lora={lora}",
        "model.chunk_length=16",
        "model.retriever.query_length=16",
        "model.retriever.doc_length=17",
        "data=tiny_chunk_groups",
        "trainer.grad_accum=2",
        "trainer.max_steps=2",
        "tracking.experiment=tiny",
        "hardware.encode_batch_size=8",
        tiny=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [run] = runs(tmp_path)
    assert run.info.status == "FINISHED" and run.data.params["model.retriever_lora.r"] == "4"
    assert run.data.params["model.lm_lora.r"] == "4" and run.data.params["model.retriever.pooling"] == "eos"
    saved = json.loads((tmp_path / "run" / "model" / "retrieval_exp.json").read_text())
    assert saved["pooling"] == "eos" and saved["prefixes"] == {"query": "query: ", "doc": "passage: "}


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    cfg = compose_config(*TINY_REVELA)
    lora = {"r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"], "init_lora_weights": False}
    gradients = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = instantiate(cfg.model, freeze_lm=False, lm_lora=lora, lm_gradient_checkpointing=checkpointing)
        model.train()
        for module in model.modules():  # dropout off, so both passes compute the same thing
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        batch = model.collate(tiny_groups(1))
        RevelaLoss(temperature=0.1, dual_loss=True).compute_loss(model.training_output(batch), batch).backward()
        gradients.append({name: p.grad for name, p in model.named_parameters() if p.grad is not None})
    assert gradients[0].keys() == gradients[1].keys() and any("lm." in name for name in gradients[0])
    assert all(torch.allclose(gradients[0][name], gradients[1][name], atol=1e-6) for name in gradients[0])
