"""Derive us_ds.csv from the raw open_clip result tables (run from this folder)."""
import os
import sys
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from canonical import canonical  # noqa: E402  (examples/data/canonical.py)

COLS = ["model", "us_task", "ds_task", "eval_protocol", "shots",
        "us_accuracy", "ds_accuracy", "us_n", "ds_n"]
US = "ImageNet 1k"
US_N = 50000  # ImageNet-1k validation set


# Test-set sizes we are confident about; anything not listed is left empty.
DS_N = {
    "CIFAR-10": 10000, "CIFAR-100": 10000, "Country211": 21100,
    "Describable Textures": 1880, "FGVC Aircraft": 3333, "Food-101": 25250,
    "GTSRB": 12630, "ImageNet Sketch": 50889, "ImageNet v2": 10000,
    "ImageNet-A": 7500, "ImageNet-O": 2000, "ImageNet-R": 30000,
    "MNIST": 10000, "ObjectNet": 18574, "Oxford Flowers-102": 6149,
    "Oxford-IIIT Pet": 3669, "PatchCamelyon": 32768, "Rendered SST2": 1821,
    "Stanford Cars": 8041, "STL-10": 8000, "SVHN": 26032,
    "iWildCam": 42791, "Camelyon17": 85054, "FMoW": 22108,
    # retrieval: image retrieval queries are captions, text retrieval queries are images
    "Flickr image retr. R@1": 5000, "Flickr image retr. R@5": 5000, "Flickr image retr. R@10": 5000,
    "Flickr text retr. R@1": 1000, "Flickr text retr. R@5": 1000, "Flickr text retr. R@10": 1000,
    "MSCOCO image retr. R@1": 25010, "MSCOCO image retr. R@5": 25010, "MSCOCO image retr. R@10": 25010,
    "MSCOCO text retr. R@1": 5000, "MSCOCO text retr. R@5": 5000, "MSCOCO text retr. R@10": 5000,
}


def long(wide, us, ds_cols, protocol):
    rows = []
    for _, r in wide.iterrows():
        for c in ds_cols:
            rows.append({"model": r["model"], "us_task": US, "ds_task": c,
                         "eval_protocol": protocol, "shots": "",
                         "us_accuracy": us.loc[r["model"]], "ds_accuracy": r[c],
                         "us_n": US_N, "ds_n": DS_N.get(c, "")})
    return pd.DataFrame(rows, columns=COLS)


res = pd.read_csv("openclip_results.csv")
ret = pd.read_csv("openclip_retrieval_results.csv")
for d in (res, ret):
    d["model"] = d["name"] + "/" + d["pretrained"]

meta = ["name", "pretrained", "params (M)", "FLOPs (B)", "model"]
# every dataset column except the average (an older version of this file had a
# malformed average '030282.63...'; the average is never used here)
cls_cols = [c for c in res.columns if c not in meta and not c.startswith("Average") and c != US]
ret_cols = [c for c in ret.columns if " R@" in c]  # retrieval recall@k only

num = lambda d, cols: d[cols].apply(pd.to_numeric, errors="coerce")
res[cls_cols + [US]] = num(res, cls_cols + [US])
ret[ret_cols] = num(ret, ret_cols)
us = res.groupby("model")[US].first()

out = pd.concat([long(res, us, cls_cols, "zeroshot"),
                 long(ret[ret["model"].isin(us.index)], us, ret_cols, "zeroshot-retrieval")])
out = out.dropna(subset=["us_accuracy", "ds_accuracy"])
out = out[out.us_accuracy.between(0, 1) & out.ds_accuracy.between(0, 1)]
out = out.drop_duplicates()
canonical(out, "openclip", {"zeroshot": "zeroshot", "zeroshot-retrieval": "zeroshot"}).to_csv("us_ds.csv", index=False)
print(f"{out.model.nunique()} models, {out.ds_task.nunique()} ds_tasks, {len(out)} rows")
