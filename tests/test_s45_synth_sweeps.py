"""The procedural suite, the sweep docs and what they promise (session 45).

- docs/sweeps.md ("Multi-GPU trials") said two-worker losses "match single-process training step
  for step", with no word of BatchNorm models, where each rank normalizes with its own shard's
  statistics (docs/training.md says so).
- ``get_task("synth_*", img_size=...)`` from a user's own code: 0 failed as "float division by
  zero", -4 and 16.0 in torch naming neither, True rendered 1-px images.
- ``n_triples=12`` (the demo's upstream task) leaves blue out of upstream and ties each shape to two
  textures, so ``synth_combo``'s blue triples are a new colour there; docs/data.md described the
  subset as "evenly spaced" only.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _paragraph_with(text: str, needle: str) -> str:
    paragraphs = re.split(r"\n\s*\n", text)
    hits = [p for p in paragraphs if needle in p]
    assert hits, needle
    return " ".join(hits[0].split())


def test_sweeps_md_multi_gpu_names_the_batchnorm_exception():
    doc = (ROOT / "docs" / "sweeps.md").read_text()
    section = doc.split("## Multi-GPU trials", 1)[1]
    para = _paragraph_with(section, "step for step")
    assert "BatchNorm" in para, para
    assert "rank 0's running statistics" in para, para


@pytest.mark.parametrize("img_size", [0, -4, True, "16", 12.5])
def test_synth_task_refuses_an_image_size_by_name(img_size):
    from meta_study.train import get_task

    with pytest.raises(ValueError, match=r"synth_shape: img_size=.*whole number of pixels >= 1"):
        get_task("synth_shape", img_size=img_size, n_train_per_class=2, n_test=4)


def test_synth_task_takes_a_whole_float_image_size_as_the_int():
    from meta_study.train import get_task

    a = get_task("synth_shape", img_size=8, n_train_per_class=2, n_test=4, cache_mb=0)
    b = get_task("synth_shape", img_size=8.0, n_train_per_class=2, n_test=4, cache_mb=0)
    assert b.img_size == 8 and isinstance(b.img_size, int)
    assert (a.train.images([0, 5]) == b.train.images([0, 5])).all()


def test_n_triples_12_coverage_is_what_the_docs_say():
    from meta_study.train.synth import COLOURS, US_TRIPLES

    pick = np.linspace(0, len(US_TRIPLES) - 1, 12).round().astype(int)
    t = US_TRIPLES[pick]
    assert set(t[:, 0]) == set(range(6)) and set(t[:, 1]) == set(range(4))
    assert set(t[:, 2]) == set(range(6)) - {COLOURS.index("blue")}
    assert all(len(set(t[t[:, 0] == s, 1])) == 2 for s in range(6))
    data_md = " ".join((ROOT / "docs" / "data.md").read_text().split())
    assert "each shape with only two textures" in data_md and "and no blue" in data_md


@pytest.mark.parametrize("n_triples", [0, 121])
def test_n_triples_out_of_range_names_the_task(n_triples):
    # a sweep's trials each errored with "n_triples must be in [1, 120], got 0", naming no task
    from meta_study.train import get_task

    with pytest.raises(ValueError, match=rf"^synth_us: n_triples={n_triples}: must be in \[1, 120\]"):
        get_task("synth_us", img_size=8, n_train=4, n_test=4, n_triples=n_triples)
