"""The analysis defaults, in one place: the option dataclasses and the command line both read them.

A module of plain constants (no imports), so that ``meta-study --help`` and ``store info`` do
not pay for importing the analysis (~0.7 s) to show a default.
"""

#: Fit below this quantile of each group's US accuracy, predict above it (the paper's protocol).
HOLDOUT_QUANTILE = 0.8
#: Eq. 1's loss ("lsq", "huber", "log") and the upper bound on its exponent alpha.
LOSS = "lsq"
ALPHA_MAX = 10.0
#: Back-test RMSE above which a headline is not trusted, as a fraction (3 accuracy points).
TOLERANCE = 0.03
#: "Scaling stops paying" where +1 US point buys fewer DS points than this.
PAYOFF_THRESHOLD = 0.1
#: Sample-size sensitivity: draws per sample size.
SENSITIVITY_TRIALS = 10
#: Bootstrap confidence intervals: resamples per group and confidence level.
BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_LEVEL = 0.95
#: Ceilings of the counts (``--trials``, ``--sizes``, ``--samples``; the option dataclasses refuse the
#: same), far above any real use: a typo with extra zeros ran until killed, or out of memory.
#: Sensitivity: draws per sample size (1,000x the default; every row of its table is held in
#: memory, ~0.4 KB each) and models in a sample (more than any store holds; a sample drawn with
#: replacement is materialised). Bootstrap: resamples per group (100x the default; 10,000 already
#: resolves a 99.9% interval's ends; each usable resample's parameters are kept).
MAX_TRIALS = 10_000
MAX_SIZE = 1_000_000
MAX_SAMPLES = 100_000
#: Their floors (the same refusals; `--help` shows each range as enforced): a draw per size at
#: least, 3 models in a sample (fewer fit no law), and 10 resamples per group (fewer leave no
#: percentile interval to speak of).
MIN_TRIALS = 1
MIN_SIZE = 3
MIN_SAMPLES = 10
#: The refit: the MLflow experiment its runs are published to, and its bootstrap resamples (more
#: than an interactive `meta-study bootstrap`: a scheduled job has the time).
REFIT_EXPERIMENT = "meta-study/refits"
REFIT_BOOTSTRAP_SAMPLES = 1000
#: MLflow ingest: runs per search call (MLflow allows up to 50,000), and how far behind the
#: watermark finished runs are read again (clock skew between the server and its clients).
MLFLOW_PAGE_SIZE = 10_000
MLFLOW_MAX_PAGE_SIZE = 50_000     # MLflow's own ceiling on max_results
MLFLOW_OVERLAP_S = 300.0
