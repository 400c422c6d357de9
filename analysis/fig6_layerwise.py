"""Fig. 6: few-shot accuracy of probes on every block's output, per DS task.

    python sweeps/zoo.py --layerwise ...   (or any sweep with layer-wise probes)
    python analysis/fig6_layerwise.py STORE --out DIR [--ds-task T] [--shots 10]

Reads rows with a representation_layer (metric ds/{task}/{k}shot/layer{L}/top1); the pre-logit
probe is shown beside them. Writes DIR/fig6_layerwise.parquet and DIR/figures/fig6_layerwise.png.
"""

from meta_study.analysis import scripts


def main() -> None:
    from meta_study.cli import prepare_out
    from meta_study.analysis.controlled import layerwise, plot_layerwise
    from meta_study.analysis.outputs import Outputs, footer, write_table
    from meta_study.errors import UserError
    from meta_study.store import open_store

    a = scripts.parser(__doc__).parse_args()
    store = open_store(a.store)
    prepare_out(a.out, a.store)   # never in the store: a plain reader of STORE would read our tables
    rows = scripts.rows(store, a)
    if rows.empty:   # not "representation_layer is null everywhere": there was no row to look at
        raise UserError(f"{a.store}: no rows match the selection")
    table = layerwise(rows)
    if not (table["layer"] >= 0).any():
        probes = rows.loc[rows["representation_layer"].notna(), "eval_protocol"]
        if len(probes):   # "null everywhere" was said of a store full of linear probes per layer
            raise UserError(f"{a.store}: no few-shot layer-wise probe rows (Fig. 6 is of eval_protocol fewshot; the "
                            f"layer-wise rows are {', '.join(sorted(map(str, probes.unique())))})")
        raise UserError(f"{a.store}: no layer-wise probe rows (representation_layer is null everywhere)")
    out = Outputs()
    write_table(table, f"{a.out}/fig6_layerwise", out)
    out.figures += plot_layerwise(table, f"{a.out}/figures/fig6_layerwise", footer=footer(store, "layer-wise probes"))
    scripts.done(out)


if __name__ == "__main__":
    scripts.run(main)
