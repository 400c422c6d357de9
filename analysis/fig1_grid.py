"""Fig. 1 / F.6-F.9: DS vs US accuracy per task with the upper hull and both fitted laws.

    python analysis/fig1_grid.py STORE --out DIR [--us-task T] [--ds-task T] [--shots N] [--holdout-quantile 0.8]

Writes DIR/fits.parquet and DIR/figures/fits_grid.{png,svg} plus one figure per group.
Cost: seconds for thousands of groups (the fits are batched); figures ~0.5 s each.
"""

from meta_study.analysis import scripts


def main() -> None:
    from meta_study.cli import flags_of, prepare_out, range_words
    from meta_study.errors import OPTION_RANGES
    from meta_study.store import open_store
    from meta_study.analysis.fitting import FitOptions
    from meta_study.analysis.results import AnalysisOptions
    from meta_study.defaults import HOLDOUT_QUANTILE

    p = scripts.parser(__doc__)
    p.add_argument("--holdout-quantile", type=float, default=HOLDOUT_QUANTILE,
                   help=f"fit on each group's models at or below this quantile of US accuracy, predict the rest "
                        f"(default {HOLDOUT_QUANTILE}; {range_words(OPTION_RANGES['holdout_quantile'])})")
    p.add_argument("--max-group-figures", type=scripts.count, default=60, help="per-group figures at most")
    a = p.parse_args()
    options = AnalysisOptions(fit=FitOptions(holdout_quantile=a.holdout_quantile))   # a refused one creates nothing
    open_store(a.store)           # first: a mistyped STORE creates no --out
    prepare_out(a.out, a.store)   # never in the store: a plain reader of STORE would read our tables
    _, out = scripts.analyse(a, options, max_group_figures=a.max_group_figures, parser=p, commands=flags_of)
    scripts.done(out)


if __name__ == "__main__":
    scripts.run(main)
