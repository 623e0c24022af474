"""A validation split held out of a training split: a seeded sample of its judged queries becomes `<id>/.../val`, the
rest `<id>/.../fit`, both registered with ir_datasets (the same documents, queries, qrels and scoreddocs filtered),
so every part of the suite reads them as it reads any dataset id, and a saved config.yaml names them.

The id says what it is: `beir/scifact/train/held-out-10pct-seed0/val` is 10% of beir/scifact/train's judged queries,
drawn with seed 0, for collections without a dev split. The seed is the split's own, not the run's, so every method
and every training seed validates on the same queries.
"""

from __future__ import annotations

import random
import re

import ir_datasets
from ir_datasets.datasets.base import Dataset, FilteredQrels, FilteredQueries, FilteredScoredDocs
from ir_datasets.util import Lazy

from retrieval_exp.errors import UserError

PARTS = ("fit", "val")
_ID = re.compile(r"^(?P<base>.+)/held-out-(?P<percent>\d+(?:\.\d+)?)pct-seed(?P<seed>\d+)/(?P<part>fit|val)$")


def split_ids(base: str, fraction: float, seed: int) -> tuple[str, str]:
    """The (fit, val) ids of holding `fraction` (0 < fraction < 1) of `base`'s judged queries out, drawn with `seed`."""
    stem = f"{base}/held-out-{fraction * 100:g}pct-seed{seed}"
    fit, val = (f"{stem}/{part}" for part in PARTS)
    return fit, val


def register_if_held_out(dataset_id: str) -> bool:
    """Register `dataset_id` (and its sibling part) when it names a held-out split; False when it does not."""
    found = _ID.match(dataset_id)
    if found is None:
        return False
    base_id, percent, seed = found["base"], float(found["percent"]), int(found["seed"])
    from retrieval_exp.data import irds  # irds calls this module on ids it does not know

    base = irds.load(base_id)
    if not (base.has_queries() and base.has_qrels()):
        raise UserError(
            f"cannot hold queries out of {base_id!r}, which has no queries and qrels: set validation.dataset to a "
            "dev split"
        )
    held_out = Lazy(lambda: _draw(base_id, percent, seed))
    stem = dataset_id.rsplit("/", 1)[0]
    for part, mode in zip(PARTS, ("exclude", "include"), strict=True):
        if f"{stem}/{part}" in ir_datasets.registry._registered:
            continue
        parts = [base.docs_handler(), FilteredQueries(base.queries_handler(), held_out, mode)]
        parts.append(FilteredQrels(base.qrels_handler(), held_out, mode))
        if base.has_scoreddocs():
            parts.append(FilteredScoredDocs(base.scoreddocs_handler(), held_out, mode))
        ir_datasets.registry.register(f"{stem}/{part}", Dataset(*parts))
    return True


def _draw(base_id: str, percent: float, seed: int) -> set[str]:
    """The held-out query ids: `percent` of the judged queries (at least one, one less than all), seeded."""
    from retrieval_exp.data import irds

    judged = sorted(query_id for query_id in irds.queries(base_id) if query_id in irds.qrels(base_id))
    if len(judged) < 2:
        raise UserError(f"{base_id!r} has {len(judged)} judged queries: too few to hold any out")
    count = min(max(1, round(len(judged) * percent / 100)), len(judged) - 1)
    return set(random.Random(seed).sample(judged, count))
