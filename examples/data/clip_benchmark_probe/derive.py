"""Derive us_ds.csv from the raw CLIP_benchmark probe_benchmark files (run from this folder)."""
import json

import os
import sys
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from canonical import canonical  # noqa: E402  (examples/data/canonical.py)

COLS = ["model", "us_task", "ds_task", "eval_protocol", "shots",
        "us_accuracy", "ds_accuracy", "us_n", "ds_n"]
US_DS = "imagenet1k"   # upstream: zero-shot ImageNet-1k top-1 (acc1)
US_TASK = "ImageNet-1k zero-shot top-1"
US_N = 50000
AGGREGATES = {"vtab", "vtab+", "imagenet_robustness"}  # averages over other rows, not tasks
# Test-set sizes we are confident about; anything not listed is left empty.
DS_N = {
    "cars": 8041, "country211": 21100, "fgvc_aircraft": 3333, "gtsrb": 12630,
    "imagenet-a": 7500, "imagenet-r": 30000, "imagenet_sketch": 50889, "imagenetv2": 10000,
    "mnist": 10000, "objectnet": 18574, "renderedsst2": 1821, "stl10": 8000,
    "vtab/cifar10": 10000, "vtab/cifar100": 10000, "vtab/svhn": 26032, "vtab/pets": 3669,
    "vtab/flowers": 6149, "vtab/dtd": 1880, "vtab/pcam": 32768,
    # retrieval: image retrieval queries are captions, text retrieval queries are images
    "flickr8k image_retrieval_recall@5": 5000, "flickr8k text_retrieval_recall@5": 1000,
    "flickr30k image_retrieval_recall@5": 5000, "flickr30k text_retrieval_recall@5": 1000,
    "mscoco_captions image_retrieval_recall@5": 25010, "mscoco_captions text_retrieval_recall@5": 5000,
}
# scaling_experiment_data_vtab.json names this checkpoint without the -quickgelu suffix
LP_ALIAS = {"ViT-B-32 laion400m_e32": "ViT-B-32-quickgelu laion400m_e32"}
LP_TASK = "VTAB mean (linear probe, full training set)"


res = pd.read_csv("openclip_results.csv")
res = res.rename(columns={"model_fullname": "model"})
us = res[res.downstream_dataset == US_DS].set_index("model")["acc1"]

rows = []
for _, r in res.iterrows():
    d = r["downstream_dataset"]
    if d == US_DS or d in AGGREGATES:
        continue
    if r["task"] == "zeroshot_classification":
        vals = [(d, "zeroshot", r["acc1"])]
    else:  # zeroshot_retrieval
        vals = [(f"{d} {c}", "zeroshot-retrieval", r[c])
                for c in ("image_retrieval_recall@5", "text_retrieval_recall@5")]
    for task, proto, v in vals:
        rows.append({"model": r["model"], "us_task": US_TASK, "ds_task": task,
                     "eval_protocol": proto, "shots": "", "us_accuracy": us.get(r["model"]),
                     "ds_accuracy": v, "us_n": US_N, "ds_n": DS_N.get(task, "")})

for rec in json.load(open("scaling_experiment_data_vtab.json")):
    if rec["dataset"] != "vtab" or rec["fewshot_k"] != -1:
        continue
    m = f'{rec["model"]} {rec["pretrained"]}'
    m = LP_ALIAS.get(m, m)
    rows.append({"model": m, "us_task": US_TASK, "ds_task": LP_TASK, "eval_protocol": "linear",
                 "shots": "", "us_accuracy": us.get(m), "ds_accuracy": rec["lp_acc1"],
                 "us_n": US_N, "ds_n": ""})

out = pd.DataFrame(rows, columns=COLS)
out["us_accuracy"] = pd.to_numeric(out["us_accuracy"], errors="coerce")
out["ds_accuracy"] = pd.to_numeric(out["ds_accuracy"], errors="coerce")
out = out.dropna(subset=["us_accuracy", "ds_accuracy"])
out = out[out.us_accuracy.between(0, 1) & out.ds_accuracy.between(0, 1)]
out = out.drop_duplicates()
canonical(out, "clip_benchmark_probe", {"zeroshot": "zeroshot", "zeroshot-retrieval": "zeroshot", "linear": "linear"}).to_csv("us_ds.csv", index=False)
print(f"{out.model.nunique()} models, {out.ds_task.nunique()} ds_tasks, {len(out)} rows; "
      + ", ".join(f"{k}: {v}" for k, v in out.eval_protocol.value_counts().items()))
