"""Tables F.1 and F.2, and F.4/F.5: how the fitted parameters move with the number of shots.

    python analysis/tables_f1_f2.py STORE --out DIR [--eval-protocol fewshot]

F.1: correlation of k, alpha and e_IR with the number of shots per (US task, DS task).
F.2: the likelihood that each parameter increases as shots increase, averaged over DS tasks.
Writes DIR/correlations/f1_*.parquet, f2_*.parquet (with F.20/F.21: the correlations part of
DIR/results.json, so another selection's tables in DIR are refused, never overwritten) and
DIR/figures/params_vs_shots.{png,svg} (no figure when no group has several shot settings).
Needs groups with several shot settings (few-shot sweeps); shift/finetune data gives empty tables.
"""

from meta_study.analysis import scripts


def main() -> None:
    from meta_study.cli import flags_of, prepare_out
    import os

    from meta_study.analysis import figures
    from meta_study.analysis.results import AnalysisOptions
    from meta_study.analysis.outputs import footer, several_shot_settings
    from meta_study.store import open_store

    p = scripts.parser(__doc__)
    a = p.parse_args()
    store = open_store(a.store)
    prepare_out(a.out, a.store)   # never in the store: a plain reader of STORE would read our tables
    # the correlations part holds F.1 and F.2: written and recorded with its selection by the one
    # pipeline (tables written beside it by hand replaced another selection's F.1/F.2 silently)
    analysis, out = scripts.analyse(a, AnalysisOptions(correlations=True), figures=False, parser=p, commands=flags_of)
    fits = analysis.fits
    for name in ("f1_shots_correlation", "f2_increase_likelihood"):
        path = os.path.join(a.out, "correlations", f"{name}.parquet")
        if path not in out.tables:   # reused from DIR: there already, made with these options
            out.tables.append(path)
    eq1 = fits[fits["law"] == "eq1"]
    # per (US task, protocol, DS task), as fig1_grid.py decides it: one setting per line (fewshot
    # 5-shot beside linear 10-shot of one task included) drew panels of lone points that said nothing
    if not several_shot_settings(eq1):
        print("no figure: no few-shot group has several shot settings")
    else:
        out.figures += figures.plot_params_vs_shots(eq1, f"{a.out}/figures/params_vs_shots",
                                                    footer=footer(store, "fits per shot setting"))
    scripts.done(out)


if __name__ == "__main__":
    scripts.run(main)
