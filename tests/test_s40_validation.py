"""Review s40 of validation.py / ingest/mapping.py: each test failed on the code before its fix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from meta_study.errors import UserError
from meta_study.ingest.mapping import (DEFAULT_ARCH_RULES, IngestMapping, PercentTally, finish_rows,
                                       infer_arch_family, parse_mapping)
from meta_study.validation import validate

BASE = {"us_task": "in21k", "us_accuracy": 0.8, "ds_task": "pets", "eval_protocol": "linear", "ds_accuracy": 0.7}


def _mapped(raw: pd.DataFrame, mapping: IngestMapping) -> pd.DataFrame:
    canon = raw[[c for c in raw.columns if c in BASE]]
    return finish_rows(canon, raw, mapping, extra_columns=[], source="src", where="x.jsonl")


@pytest.mark.parametrize("run_id", ["{model}-{size}", "model"])
def test_a_list_in_a_run_id_column_is_a_reason_not_a_traceback(run_id):
    # a JSON Lines cell [..] in a run_id column: pd.isna of a list raised "The truth value of an
    # array ... is ambiguous", a traceback for the whole file
    raw = pd.DataFrame([{**BASE, "model": ["vit", "b"], "size": 224}, {**BASE, "model": "vit", "size": 224}])
    v = validate(_mapped(raw, IngestMapping(run_id=run_id, extra="none")))
    assert v.table.column("run_id").to_pylist() == ["vit-224" if "{" in run_id else "vit"]
    (reason,) = v.rejected["reason"].tolist()
    assert reason == ("run_id: field {model} of the template '{model}-{size}' holds a list ([\"vit\", \"b\"]), "
                      "not a name" if "{" in run_id else "run_id: wrong type (list is not a string)"), reason


def test_a_run_id_templates_fields_are_trimmed_as_names_are():
    # a CSV keeps the spaces before a separator ("vit ,224"), JSON keeps both: the template gave
    # 'vit @224' and 'vit@ 224' where the same rows in another format gave 'vit@224' (two runs)
    raw = pd.DataFrame([{**BASE, "model": "vit ", "size": "224"}, {**BASE, "model": "vit", "size": " 224"},
                        {**BASE, "model": "\u200bvit", "size": 224}])
    rows = _mapped(raw, IngestMapping(run_id="{model}@{size}", extra="none"))
    assert rows["run_id"].tolist() == ["vit@224"] * 3


def test_a_tasks_zero_width_variant_is_one_task_in_the_percent_check():
    # validation stores 'X\u200b' as task 'X'; the tally counted it apart, so its 0.62 had no percents
    # of "its" task beside it and was stored as 0.0062 among X's 40s
    tally = PercentTally()
    nums = np.array([0.62] + [40.0 + i for i in range(11)])
    tasks = ["X\u200b"] + ["X"] * 11
    tally.add("ds_accuracy", "percent", nums, tasks)
    reasons = tally.lone_fractions("ds_accuracy", "percent", nums, tasks)
    assert reasons is not None and reasons[0] is not None and "a fraction?" in reasons[0], reasons


def test_a_model_name_with_a_byte_order_mark_gets_its_family():
    # '\ufeffvit_b16' is stored as 'vit_b16', but '^vit' missed it and the family was "other"
    got = infer_arch_family(pd.Series(["\ufeffvit_b16", "\u200bmixer_b16_224", " resnet50 "]), DEFAULT_ARCH_RULES)
    assert got.tolist() == ["vit", "mixer", "resnet"]


def test_a_quoted_percent_constant_is_refused_as_a_number_one_is():
    # 'ds_accuracy: "85"' passed, and every row was quarantined "set its unit to percent", which
    # a constant column may not have
    with pytest.raises(UserError, match=r"constants.ds_accuracy: '85' is not a fraction in \[0, 1\].*write 0.85"):
        parse_mapping({"constants": {"ds_accuracy": "85"}}, "m.yaml")
    assert parse_mapping({"constants": {"ds_accuracy": "0.85"}}, "m.yaml").constants["ds_accuracy"] == "0.85"


def test_one_thousands_group_in_a_column_of_decimal_commas_is_refused_not_read_as_thousands():
    # a German export: "86,57" was refused ("a decimal comma?") but "86,568" beside it was read as
    # 86568, and epochs "1,500" as 1500 epochs
    from conftest import make_rows

    rows = make_rows(3, ds_tasks=("a",)).astype(object)
    rows["epochs"] = ["1,500", "0,5", "2"]
    rows["batch_size"] = ["1,024", "2,048", "512"]   # no decimal comma in this column: thousands
    v = validate(rows)
    assert v.table.column("epochs").to_pylist() == [2.0] and v.table.column("batch_size").to_pylist() == [512]
    reason = v.rejected["reason"].iloc[0]
    assert reason == ("epochs: wrong type ('1,500' is not a number; a decimal comma, as elsewhere in the column "
                      "(1.500), or thousands (1500)? write the number without a comma)"), reason
    alone = make_rows(1, ds_tasks=("a",)).astype(object)
    alone["epochs"] = ["1,500"]
    assert validate(alone).table.column("epochs").to_pylist() == [1500.0]


def test_a_unit_does_not_read_one_thousands_group_among_decimal_commas_as_thousands():
    # param_count in millions: "86,568" became 86,568,000,000 parameters, stored, beside "86,57" refused
    raw = pd.DataFrame([{**BASE, "run_id": f"r{i}", "param_count": p} for i, p in enumerate(["86,568", "86,57", "22"])])
    mapping = IngestMapping(units={"param_count": "millions"}, extra="none")
    canon = raw[[c for c in raw.columns if c != "x"]]
    v = validate(finish_rows(canon, raw, mapping, extra_columns=[], source="src", where="x.csv"))
    assert v.table.column("param_count").to_pylist() == [22_000_000]
    assert "'86,568' is not an integer; a decimal comma, as elsewhere" in v.rejected["reason"].iloc[0]


@pytest.mark.parametrize("template", ["{model}-{size:03d}", "{model!r}", "{model:>10}"])
def test_a_format_spec_in_a_run_id_template_is_refused_in_one_line(template):
    # '{size:03d}' raised "Unknown format code 'd' for object of type 'str'" (a traceback) on every
    # file; '{model!r}' stored every id quoted
    with pytest.raises(UserError, match=r"has a format spec or conversion, which is not supported"):
        parse_mapping({"run_id": template}, "m.yaml")
    assert parse_mapping({"run_id": "{{a:b}}-{model}"}, "m.yaml").run_id == "{{a:b}}-{model}"   # literal braces


def test_a_percent_column_refused_as_fractions_says_what_near_chance_percents_need():
    # told only "remove the unit", a column of near-chance percents (0.4 %, 0.9 %) went in as 40 %, 90 %
    tally = PercentTally()
    tally.add("ds_accuracy", "percent", np.array([0.4, 0.9, 0.6]), ["imagenet-a"] * 3)
    with pytest.raises(UserError) as e:
        tally.refuse_fractions()
    msg = str(e.value)
    assert msg.startswith("ds_accuracy is declared percent but holds fractions: 3 of 3 nonzero values"), msg
    assert msg.endswith("If they are percents of near-chance models (at most 1 %), no unit tells them from "
                        "fractions: write them as fractions (divided by 100) and drop the unit"), msg


def test_a_near_chance_percent_written_with_its_sign_is_stored_as_a_percent():
    # "0.5%" beside its task's "40%" ... "50%" was quarantined as "a fraction?" (and counted as one
    # towards refusing the source): its sign says it is 0.5 %
    vals = ["0.5%"] + [f"{40 + i}%" for i in range(11)] + ["0.62"]
    raw = pd.DataFrame([{**BASE, "ds_task": "imagenet-a", "run_id": f"r{i}", "ds_accuracy": a} for i, a in enumerate(vals)])
    tally = PercentTally()
    rows = finish_rows(raw[list(BASE) + ["run_id"]], raw, IngestMapping(units={"ds_accuracy": "percent"}, extra="none"),
                       extra_columns=[], source="src", where="x.csv", tally=tally)
    tally.refuse_fractions()
    v = validate(rows)
    assert v.table.column("ds_accuracy").to_pylist()[0] == 0.005
    assert v.rejected["row"].tolist() == [12] and "0.62 in a percent column" in v.rejected["reason"].iloc[0]
