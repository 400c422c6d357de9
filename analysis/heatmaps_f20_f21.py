"""Tables and heatmaps F.20 (Spearman between DS tasks) and F.21 (Spearman between DS and US).

    python analysis/heatmaps_f20_f21.py STORE --out DIR [--us-task T] [--shots N]

Writes DIR/correlations/f20_*.parquet, f21_*.parquet (beside f1_*, f2_*: the correlations part, one
record in DIR/results.json) and DIR/figures/f20_*.png, f21_us_ds.png.
"""

from meta_study.analysis import scripts


def main() -> None:
    from meta_study.cli import flags_of, prepare_out
    from meta_study.store import open_store
    from meta_study.analysis.results import AnalysisOptions

    p = scripts.parser(__doc__)
    a = p.parse_args()
    open_store(a.store)           # first: a mistyped STORE creates no --out
    prepare_out(a.out, a.store)   # never in the store: a plain reader of STORE would read our tables
    _, out = scripts.analyse(a, AnalysisOptions(fits=False, correlations=True), parser=p, commands=flags_of)
    scripts.done(out)


if __name__ == "__main__":
    scripts.run(main)
