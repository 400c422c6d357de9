#!/usr/bin/env bash
# Fill in the two site-specific names of the deployment files and write the results to OUT_DIR:
#   BUCKET    the S3 bucket of the store, the refits and MLflow's artifacts (s3://BUCKET/meta-study/...)
#   REGISTRY  where the images of cluster/Dockerfile and cluster/mlflow/Dockerfile are pushed
#
#   BUCKET=my-lab-bucket REGISTRY=123456789012.dkr.ecr.us-west-2.amazonaws.com cluster/render.sh /tmp/ms
#   kubectl apply -f /tmp/ms/kuberay/raycluster.yaml
#
# Renders kuberay/*.yaml, mlflow/*.yaml and aws/*.json (the IAM policies) and nothing else: the
# sources stay free of account-specific values. Only the tokens `s3://BUCKET/`, `:::BUCKET` (IAM
# ARNs) and `REGISTRY/` are replaced, so the words elsewhere in comments are left alone.
set -euo pipefail

# --help prints the comment above; another option is refused (with BUCKET and REGISTRY set, `--help`
# was taken for OUT_DIR: mkdir's own help, then exit 2).
case "${1:-}" in
  -h|--help) awk 'NR > 1 && /^set -euo pipefail/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}"; exit 0 ;;
  -*) echo "render: unknown option $1; usage: BUCKET=... REGISTRY=... cluster/render.sh OUT_DIR (--help)" >&2; exit 2 ;;
esac

# Missing inputs are user errors (exit 2, one line), as a bad name below: `${1:?}` was exit 1 with
# bash's "line 14: 1:" in front of the message.
usage() { echo "render: $*; usage: BUCKET=... REGISTRY=... cluster/render.sh OUT_DIR" >&2; exit 2; }
[ -n "${1:-}" ] || usage "no OUT_DIR given"
out="$1"
[ -n "${BUCKET:-}" ] || usage "set BUCKET to the S3 bucket name"
[ -n "${REGISTRY:-}" ] || usage "set REGISTRY to the image registry, e.g. ghcr.io/my-lab"
# Also keeps sed's replacement free of its special characters (& \ #).
[[ "$BUCKET" =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]] || { echo "render: not an S3 bucket name: $BUCKET" >&2; exit 2; }
[[ "$REGISTRY" =~ ^[a-z0-9][a-z0-9._:/-]*[a-z0-9]$ ]] || { echo "render: not an image registry: $REGISTRY" >&2; exit 2; }

mkdir -p "$out"
out="$(cd "$out" && pwd -P)"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
# OUT_DIR cluster/ itself (`render.sh .` from there) truncated every source to 0 bytes (`> $out/$f`
# opens the file sed then reads) and said "wrote".
[ "$out" != "$here" ] || usage "OUT_DIR $out is cluster/ itself: its sources would be overwritten; give another directory"
cd "$here"
for f in kuberay/*.yaml mlflow/*.yaml aws/*.json; do
  mkdir -p "$out/$(dirname "$f")"
  sed -e "s#s3://BUCKET/#s3://$BUCKET/#g" -e "s#:::BUCKET#:::$BUCKET#g" -e "s#REGISTRY/#$REGISTRY/#g" \
    "$f" > "$out/$f"
done
echo "render: wrote $out/{kuberay,mlflow,aws}" >&2
