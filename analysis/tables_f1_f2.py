"""Tables F.1 and F.2, and F.4/F.5: how the fitted parameters move with the number of shots.

    python analysis/tables_f1_f2.py STORE --out DIR [--eval-protocol fewshot]

F.1: correlation of k, alpha and e_IR with the number of shots per (US task, DS task).
F.2: the likelihood that each parameter increases as shots increase, averaged over DS tasks.
Writes DIR/correlations/f1_*.parquet, f2_*.parquet and DIR/figures/params_vs_shots.{png,svg} (no figure
when no group has several shot settings).
Needs groups with several shot settings (few-shot sweeps); shift/finetune data gives empty tables.
"""

from meta_study.analysis import scripts


def main() -> None:
    from meta_study.analysis import figures
    from meta_study.analysis.correlations import increase_likelihood, shots_correlation
    from meta_study.analysis.results import AnalysisOptions
    from meta_study.analysis.outputs import footer, write_table
    from meta_study.store import open_store

    a = scripts.parser(__doc__).parse_args()
    store = open_store(a.store)
    analysis, out = scripts.analyse(a, AnalysisOptions(), figures=False)
    fits = analysis.fits
    f1 = shots_correlation(fits)
    write_table(f1, f"{a.out}/correlations/f1_shots_correlation", out)
    write_table(increase_likelihood(fits), f"{a.out}/correlations/f2_increase_likelihood", out)
    if f1.empty:   # an empty figure of three blank panels said nothing the tables do not
        print("no figure: no few-shot group has several shot settings (the tables are empty)")
    else:
        out.figures += figures.plot_params_vs_shots(fits, f"{a.out}/figures/params_vs_shots",
                                                    footer=footer(store, "fits per shot setting"))
    scripts.done(out)


if __name__ == "__main__":
    scripts.run(main)
