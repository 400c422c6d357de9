"""Fig. 3 / F.10-F.16: fitting and prediction error against the number of models, hull vs all.

    python analysis/fig3_sensitivity.py STORE --out DIR [--trials 10] [--sizes 10,30,100] [--address ray://...]
    ray job submit --working-dir . -- python analysis/fig3_sensitivity.py s3://lab/store --out /tmp/f3 --address auto

Writes DIR/sensitivity.parquet, DIR/sensitivity_summary.parquet, DIR/sensitivity_frontiers.parquet and
DIR/figures/sensitivity.{png,svg}.
Cost: ~0.3 us per point-fit; a paper-scale run (100 groups x 4,800 models) takes ~1 CPU-minute.
"""

from meta_study.analysis import scripts


def main() -> None:
    from meta_study.cli import flags_of, prepare_out
    from meta_study.store import open_store
    from meta_study.analysis.results import AnalysisOptions
    from meta_study.analysis.sensitivity import SensitivityOptions
    from meta_study.defaults import MAX_TRIALS, MIN_TRIALS, SENSITIVITY_TRIALS

    p = scripts.parser(__doc__)
    p.add_argument("--trials", type=int, default=SENSITIVITY_TRIALS,
                   help=f"random draws per sample size (default {SENSITIVITY_TRIALS}; {MIN_TRIALS}<=x<={MAX_TRIALS}, "
                        "as meta-study sensitivity --trials)")
    p.add_argument("--sizes", default=None, help="comma-separated sample sizes (default: 8 geometric steps from 10 "
                   "models to all of a group's fitting points)")
    p.add_argument("--seed", type=int, default=0, help="the draws' master seed (default 0; x>=0)")
    p.add_argument("--address", default=None, help="Ray cluster to join: host:port, ray://host:port, auto, or local "
                   "(default: $RAY_ADDRESS if set, else a Ray of its own on this machine)")
    p.add_argument("--serial", action="store_true", help="run in this process, without Ray")
    a = p.parse_args()
    if a.serial and a.address is not None:   # as the commands refuse it: ignored, a cluster seemed to do the work
        from meta_study.errors import UserError

        raise UserError("--address: for the Ray a command uses, and --serial runs in this process without Ray "
                        "(drop one of them)")
    options = AnalysisOptions(fits=False, sensitivity=SensitivityOptions(sizes=scripts.sizes(a.sizes), trials=a.trials,
                                                                         seed=a.seed))
    open_store(a.store)           # first: a mistyped STORE creates no --out
    prepare_out(a.out, a.store)   # never in the store: a plain reader of STORE would read our tables
    _, out = scripts.analyse(a, options, address=a.address, use_ray=not a.serial, parser=p, commands=flags_of)
    scripts.done(out)


if __name__ == "__main__":
    scripts.run(main)
