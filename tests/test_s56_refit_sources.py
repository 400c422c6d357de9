"""A refit recomputes a group whose mixed_sources warning would change (session 56): the group's
fingerprint hashes each row's source and protocol name where it has two or more sources, and
hashes a one-source group as before (so the upgrade recomputes only the mixed groups)."""

import dataclasses

import numpy as np

from meta_study.analysis.groups import Group
from meta_study.refit import group_fingerprint


def _group(sources: list[str | None], protocols: list[str | None] | None = None) -> Group:
    n = len(sources)
    return Group("hellaswag", "mmlu", "other", None, np.linspace(0.4, 0.9, n), np.linspace(0.3, 0.6, n),
                 np.array([f"r{i}" for i in range(n)], object), np.array([f"m{i}" for i in range(n)], object),
                 sources=np.array(sources, object),
                 protocols=np.array(protocols, object) if protocols is not None else np.zeros(0, object))


def test_a_mixed_group_hashes_its_sources_and_protocol_names() -> None:
    g = _group(["helm", "helm", "oll", "oll"], ["helm-em", "helm-em", "open-llm-v1", "open-llm-v1"])
    fp = group_fingerprint(g)
    # a source renamed, a row moved to the other source, a protocol name changed: the warning's
    # text changes, so must the fingerprint (the refit kept the old row and its old warning)
    assert group_fingerprint(dataclasses.replace(g, sources=np.array(["helm", "helm", "leaderboard", "leaderboard"],
                                                                      object))) != fp
    assert group_fingerprint(dataclasses.replace(g, sources=np.array(["helm", "oll", "oll", "oll"], object))) != fp
    assert group_fingerprint(dataclasses.replace(g, protocols=np.array(["helm-em", "helm-em", "v2", "v2"],
                                                                        object))) != fp
    # rows in another order hash the same
    rev = dataclasses.replace(g, us_accuracy=g.us_accuracy[::-1], ds_accuracy=g.ds_accuracy[::-1],
                              run_ids=g.run_ids[::-1], model_names=g.model_names[::-1], sources=g.sources[::-1],
                              protocols=g.protocols[::-1])
    assert group_fingerprint(rev) == fp


def test_a_one_source_group_hashes_as_before() -> None:
    g = _group(["helm"] * 4, ["helm-em"] * 4)
    # the fingerprint of a group without the fields (as before they existed) is the same
    bare = dataclasses.replace(g, sources=np.zeros(0, object), protocols=np.zeros(0, object))
    assert group_fingerprint(g) == group_fingerprint(bare)
    assert group_fingerprint(dataclasses.replace(g, sources=np.array(["other"] * 4, object))) == group_fingerprint(g)
