"""D.1 / D.3 / D.4: head weight decay against US and DS accuracy, and the best head WD per task.

    python sweeps/head_wd.py ...                       # makes the runs (appendix C.1)
    meta-study ingest MLFLOW_URI --experiment 'head_wd*' --store S
    python analysis/head_wd_d1_d4.py S --out DIR [--shots 10]

D.1/D.3: mean US and DS accuracy per head weight decay (over seeds, and over the configurations
trained at several head WDs; a configuration trained at one head WD only, e.g. a head-lr sweep in
the same store, is left out where others were trained at several) and the best
head WD per (US task, DS task, protocol, shots). D.4: that best head WD against the task's US-DS
rank correlation.
Writes DIR/d1_head_wd_curves.parquet, d3_best_head_wd.parquet, d4_*.parquet and figures.
"""

from meta_study.analysis import scripts


def main() -> None:
    from meta_study.cli import prepare_out
    from meta_study.analysis.controlled import write_all
    from meta_study.analysis.outputs import footer
    from meta_study.errors import UserError
    from meta_study.store import open_store

    p = scripts.parser(__doc__)
    a = p.parse_args()
    store = open_store(a.store)
    prepare_out(a.out, a.store)   # never in the store: a plain reader of STORE would read our tables
    rows = scripts.rows(store, a)
    if rows.empty:   # not "no rows with head_wd": there was no row to look at (a mistyped --ds-task)
        raise UserError(f"{a.store}: no rows match the selection")
    if rows["head_wd"].notna().sum() == 0:
        raise UserError(f"{a.store}: no rows with head_wd (run sweeps/head_wd.py and ingest it)")
    res = write_all(rows, a.out, footer=footer(store, "head weight decay sweep"),
                    shots=a.shots[0] if len(a.shots) == 1 else None)
    for p_ in res["tables"] + res["figures"]:
        if p_.endswith((".parquet", ".png")):
            print(f"wrote {p_}")


if __name__ == "__main__":
    scripts.run(main)
