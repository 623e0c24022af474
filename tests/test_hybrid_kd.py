"""Method 3: selective distillation, the hybrid loss by hand, the projection head, QReCC's format, scored pairs
with a cached teacher, and the teacher-agreement measures against scipy and scikit-learn."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from scipy import stats
from sklearn import metrics

from retrieval_exp.agreement import ndcg_at, teacher_agreement
from retrieval_exp.batches import Triple, TripleBatch, TripleEmbeddings
from retrieval_exp.data import irds
from retrieval_exp.data.local import register_all
from retrieval_exp.data.pairs import ScoredPairs
from retrieval_exp.data.qrecc import read_turns
from retrieval_exp.data.selection import AboveMeanSigma, TopPercentile
from retrieval_exp.data.teacher import TeacherScores
from retrieval_exp.errors import UserError
from retrieval_exp.hardware import Hardware
from retrieval_exp.losses.contrastive import InfoNCE
from retrieval_exp.losses.distillation import HybridKD
from retrieval_exp.models.bi_encoder import BiEncoder
from tests.conftest import REPO, TINY, compose_config, launch

QRECC = REPO / "tests" / "data" / "qrecc"


@pytest.mark.parametrize("size", range(1, 64))
def test_top_percentile_keeps_exactly_the_top_share_as_numpy_does(size: int) -> None:
    scores = np.random.default_rng(size).permutation(size) / size  # distinct
    kept = TopPercentile(80).keep(scores.tolist())
    assert len(kept.positions) == math.ceil(size * 0.2)
    assert set(kept.positions) == set(np.flatnonzero(scores >= np.percentile(scores, 80)))
    assert kept.threshold == min(scores[kept.positions])


def test_top_percentile_breaks_ties_by_position() -> None:
    scores = [0.3, 0.5, 0.5, 0.5, 0.5, 0.1, 0.5, 0.5, 0.5, 0.2]
    kept = TopPercentile(80).keep(scores)
    assert kept.positions == [1, 2] and kept.threshold == 0.5  # exactly 2 of 10, though 7 tie at 0.5
    assert TopPercentile(0).keep(scores).positions == sorted(range(10), key=lambda i: (-scores[i], i))


def test_mean_plus_k_sigma_keeps_everything_at_the_threshold() -> None:
    kept = AboveMeanSigma(0.5).keep([1.0, 2.0, 3.0, 4.0, 5.0])  # mean 3, population std sqrt(2)
    assert kept.positions == [4, 3] and kept.threshold == pytest.approx(3 + 0.5 * math.sqrt(2))
    assert AboveMeanSigma(0).keep([2.0, 2.0, 2.0]).positions == [0, 1, 2]


# Q = [[1, 0], [0, 1]], D = [[.6, .8], [0, 1]]: S = [[.6, 0], [.8, 1]]; teacher scores of the pairs .5 and .9
PAIRS = TripleEmbeddings(
    torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.6, 0.8], [0.0, 1.0]]), torch.empty(2, 0, 2)
)
SCORED = TripleBatch(None, None, 0, torch.tensor([[0.5], [0.9]]))  # type: ignore[arg-type]


def test_hybrid_loss_by_hand() -> None:
    contrastive = (
        -math.log(math.exp(6) / (math.exp(6) + 1)) - math.log(math.exp(10) / (math.exp(8) + math.exp(10)))
    ) / 2
    regression = ((0.6 - 0.5) ** 2 + (1.0 - 0.9) ** 2) / 2
    hybrid = HybridKD(temperature=0.1, weight=0.1)
    loss = hybrid.compute_loss(PAIRS, SCORED)
    assert loss.item() == pytest.approx(contrastive + 0.1 * regression, abs=1e-5)
    assert hybrid.terms["contrastive"].item() == pytest.approx(contrastive, abs=1e-5)
    assert hybrid.terms["regression"].item() == pytest.approx(regression, abs=1e-6)
    assert HybridKD(temperature=0.1, weight=1.0).compute_loss(PAIRS, SCORED).item() == pytest.approx(
        contrastive + regression, abs=1e-5
    )


def test_hybrid_loss_without_regression_is_in_batch_infonce() -> None:
    torch.manual_seed(0)
    vectors = torch.nn.functional.normalize(torch.randn(16, 8), dim=-1)
    output = TripleEmbeddings(vectors[:8], vectors[8:], torch.empty(8, 0, 8))
    batch = TripleBatch(None, None, 0, torch.rand(8, 1))  # type: ignore[arg-type]
    hybrid = HybridKD(temperature=0.1, weight=0.0).compute_loss(output, batch)
    assert hybrid.item() == InfoNCE(temperature=0.1, in_batch=True).compute_loss(output, batch).item()


def test_regression_pulls_each_pair_score_toward_its_teacher_score() -> None:
    queries = PAIRS.queries.clone().requires_grad_()
    output = TripleEmbeddings(queries, PAIRS.positives, PAIRS.negatives)
    low, high = torch.tensor([[0.0], [0.0]]), torch.tensor([[1.0], [1.0]])
    gradient = {}
    for name, target in (("low", low), ("high", high)):
        queries.grad = None
        HybridKD(temperature=0.1, weight=1.0).compute_loss(output, TripleBatch(None, None, 0, target)).backward()  # type: ignore[arg-type]
        gradient[name] = (queries.grad * PAIRS.positives).sum().item()  # d loss / d(pair scores), summed
    assert gradient["low"] > gradient["high"]


def test_agreement_matches_scipy_and_sklearn() -> None:
    rng = np.random.default_rng(3)
    teacher = rng.uniform(0.3, 1.0, 200)
    student = np.clip(teacher + rng.normal(0.05, 0.1, 200), -1, 1)
    got = teacher_agreement(teacher, student, ks=(1, 5, 10))
    assert got["pearson"] == pytest.approx(np.corrcoef(teacher, student)[0, 1])
    assert got["mae"] == pytest.approx(metrics.mean_absolute_error(teacher, student))
    assert got["mse"] == pytest.approx(metrics.mean_squared_error(teacher, student))
    assert got["rmse"] == pytest.approx(math.sqrt(metrics.mean_squared_error(teacher, student)))
    truth, predicted = teacher >= np.median(teacher), student >= np.median(teacher)
    assert got["accuracy"] == pytest.approx(metrics.accuracy_score(truth, predicted))
    assert got["precision"] == pytest.approx(metrics.precision_score(truth, predicted))
    assert got["recall"] == pytest.approx(metrics.recall_score(truth, predicted))
    assert got["f1"] == pytest.approx(metrics.f1_score(truth, predicted))
    assert got["t_statistic"] == pytest.approx(stats.ttest_rel(teacher, student).statistic)
    assert got["wilcoxon_pvalue"] == pytest.approx(stats.wilcoxon(teacher, student).pvalue)
    assert got["cohens_d"] == pytest.approx((teacher - student).mean() / (teacher - student).std())
    assert got["cohens_d"] < 0  # the student scores higher, as the authors' did
    top10 = set(np.argsort(-teacher)[:10]) & set(np.argsort(-student)[:10])
    assert got["recall@10"] == len(top10) / 10


def test_global_ranking_measures_by_hand() -> None:
    teacher, student = np.array([0.9, 0.8, 0.7, 0.1]), np.array([0.8, 0.9, 0.1, 0.7])
    # teacher's top 2: pair 0 (gain 2), pair 1 (gain 1); the student ranks pair 1 first, then pair 0
    expected = (1 / math.log2(2) + 2 / math.log2(3)) / (2 / math.log2(2) + 1 / math.log2(3))
    assert ndcg_at(teacher, student, 2) == pytest.approx(expected)
    got = teacher_agreement(teacher, student, ks=(1, 2))
    assert (got["recall@1"], got["recall@2"]) == (0.0, 1.0)


def test_identical_scores_agree_perfectly() -> None:
    scores = [0.2, 0.9, 0.5, 0.7, 0.7]
    got = teacher_agreement(scores, scores, ks=(1, 3))
    assert got["pearson"] == pytest.approx(1) and got["mae"] == 0 and got["f1"] == 1
    assert (got["t_pvalue"], got["wilcoxon_pvalue"], got["cohens_d"]) == (1.0, 1.0, 0.0)
    assert got["recall@3"] == 1 and got["ndcg@3"] == pytest.approx(1)


def test_qrecc_turns_follow_the_authors_fallbacks_and_filters() -> None:
    turns = {query_id: (query, answer) for query_id, query, answer in read_turns(QRECC / "qrecc-training.json")}
    assert len(turns) == 13  # 16 turns; a short query, an empty answer and a too-short question are dropped
    assert {"1_5", "2_4", "3_4"}.isdisjoint(turns)
    assert turns["3_2"] == (
        "What determines enzyme structure?",
        "Enzyme structure is determined by the sequence of amino acids. Folding gives the enzyme its active site.",
    )


def test_qrecc_registers_as_a_dataset_with_each_answer_relevant() -> None:
    register_all(compose_config("data=qrecc", f"data.folder={QRECC}").data.register)
    judged = irds.qrels("qrecc/test")
    assert len(judged) == 6 and all(docs == {f"{q}_a": 1} for q, docs in judged.items())
    assert len(irds.corpus("qrecc/test")) == 6 and irds.queries("qrecc/train")["1_2"].startswith("Why are vaccine")


def test_missing_qrecc_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no QReCC file at .*set data.folder"):
        register_all(compose_config("data=qrecc", f"data.folder={tmp_path}").data.register)


def tiny_pairs(selection: object = None) -> ScoredPairs:
    register_all(compose_config(*TINY).data.register)
    return ScoredPairs("tiny/train", selection=selection, seed=1)


def test_scored_pairs_keep_the_selection_and_score_once(tmp_path: Path) -> None:
    teacher_config = OmegaConf.to_container(compose_config(*TINY).model, resolve=True)
    everything = tiny_pairs()
    everything.attach_teacher(TeacherScores(teacher_config, tmp_path, Hardware()))
    assert len(everything) == 14 and everything.report["teacher/cached"] == 0
    scores = dict(everything.scored_positives())

    selected = tiny_pairs(TopPercentile(50))
    selected.attach_teacher(TeacherScores(teacher_config, tmp_path, Hardware()))
    assert selected.report["teacher/cached"] == 1 and selected.report["selection/kept"] == len(selected) == 7
    kept = dict(selected.scored_positives())
    assert (
        min(kept.values()) == selected.report["selection/threshold"] >= max(set(scores.values()) - set(kept.values()))
    )
    examples = selected.epoch(0)
    assert all(t.negatives == () and len(t.teacher_scores) == 1 for t in examples)
    again = tiny_pairs(TopPercentile(50))
    again.attach_teacher(TeacherScores(teacher_config, tmp_path, Hardware()))
    assert list(again.epoch(0)) == list(examples) and list(again.epoch(1)) != list(
        examples
    )  # same seed and epoch, same order


def projected(folder: str | None = None) -> BiEncoder:
    cfg = compose_config(*TINY, "+model.projection=8")
    if folder:
        cfg.model.name_or_path = folder
    return instantiate(cfg.model)


def test_projection_head_is_saved_and_reloaded(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = projected()
    tokens = model.tokenize(["vaccines train the immune system", "sea ice"], "doc")
    model.eval()
    vectors = model(tokens)
    assert vectors.shape == (2, 8) and torch.allclose(vectors.norm(dim=-1), torch.ones(2))
    model.train()
    assert not torch.equal(model(tokens), model(tokens))  # dropout after the projection while training
    model.save(tmp_path / "student")
    reloaded = projected(str(tmp_path / "student")).eval()
    assert torch.allclose(reloaded(tokens), vectors, atol=1e-6)
    assert torch.allclose(BiEncoder(str(tmp_path / "student")).eval()(tokens), vectors, atol=1e-6)  # its own head
    with pytest.raises(UserError, match="saved with a 8-dim projection head: set model.projection=8"):
        BiEncoder(str(tmp_path / "student"), projection=4)


def test_scored_pairs_collate_into_pair_batches() -> None:
    model = projected()
    batch = model.collate([Triple("q", "d", (), (0.75,)), Triple("r", "e", (), (0.25,))])
    output = model.training_output(batch)
    assert output.negatives.shape == (2, 0, 8) and batch.teacher_scores.tolist() == [[0.75], [0.25]]


def finished_runs(workdir: Path, experiment: str) -> list:  # noqa: ANN201
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])
    return [run for run in runs if "sweep_id" not in run.data.tags or "mlflow.parentRunId" in run.data.tags]


TINY_STUDENT = ("model=tiny_bert", "model@teacher=tiny_bert", "hardware.encode_batch_size=8", "trainer.log_every=1")


def test_paper_preset_runs_tiny_on_a_qrecc_fixture(tmp_path: Path) -> None:
    done = launch(
        tmp_path, "experiment=hybrid_kd/paper", *TINY_STUDENT, f"data.folder={QRECC}", "trainer.epochs=2",
        "trainer.batch_size=2", tiny=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "run"
    agreement = dict(line.split("\t") for line in (out / "agreement.tsv").read_text().splitlines()[1:])
    assert float(agreement["pairs"]) == 3 and {"pearson", "ndcg@50", "wilcoxon_pvalue", "cohens_d"} <= agreement.keys()
    assert (out / "model" / "projection.safetensors").is_file()
    assert {line.split()[0] for line in (out / "run.trec").read_text().splitlines()} == {
        "1_1", "1_2", "2_1", "2_2", "3_1", "4_1"
    }  # fmt: skip

    [run] = finished_runs(tmp_path, "hybrid_kd_qrecc")
    assert run.info.status == "FINISHED" and run.data.tags["method"] == "hybrid_kd"
    metrics = run.data.metrics
    assert (metrics["selection/kept"], metrics["teacher/pairs"], metrics["train/steps"]) == (3, 13, 2)
    assert metrics["agreement/pairs"] == 3 and "nDCG_at_10" in metrics
    history = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_metric_history(run.info.run_id, "train/regression")
    assert [m.step for m in history] == [1, 2]  # the loss's parts are logged beside train/loss
    artifacts = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").list_artifacts(run.info.run_id, "teacher")
    assert len(artifacts) == 1 and artifacts[0].path.endswith(".tsv")


def test_a_sweep_scores_the_teacher_once(tmp_path: Path) -> None:
    done = launch(
        tmp_path, "experiment=hybrid_kd/scifact", "data=tiny_pairs", *TINY_STUDENT, "trainer.batch_size=4",
        "loss.weight=0,0.1", multirun=True, env={"RETRIEVAL_EXP_CACHE": str(tmp_path / "cache")}, tiny=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    children = finished_runs(tmp_path, "hybrid_kd_scifact")
    assert [run.data.params["loss.weight"] for run in children] == ["0", "0.1"]
    assert [run.data.metrics["teacher/cached"] for run in children] == [0, 1]
    assert [run.data.metrics["selection/kept"] for run in children] == [7, 7]
    assert len(list((tmp_path / "cache" / "teacher_scores").glob("*.tsv"))) == 1
