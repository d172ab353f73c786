#!/usr/bin/env bash
# examples/data/make_all.sh — builds the course's four example data sets from
# Debian's Fashion-MNIST under data/ (gitignored), with `kiln data make`:
#   data/multilabel    Planet-like 2x2 collages, labels.csv (image_name,tags)
#   data/segmentation  CamVid-like collages, labels/<name>_P.png masks, codes.txt
#   data/points        head-pose-like: one item, points.csv (image_name,x,y)
#   data/folders       train/<class>/, valid/<class>/ (fastai's from_folder)
# A set that is already there is kept (pass --force to make it again).
#
# usage: examples/data/make_all.sh [options for every set: --seed S, --force, --data DIR]
# environment: KILN (default build/kiln), DATA_OUT (default data)
set -euo pipefail
cd "$(dirname "$0")/../.."
kiln=${KILN:-build/kiln}
out=${DATA_OUT:-data}
force=0
for a in "$@"; do [ "$a" = --force ] && force=1; done
if [ ! -x "$kiln" ]; then
    echo "make_all.sh: $kiln is not built (run make build, or set KILN)" >&2
    exit 2
fi
for kind in multilabel segmentation points folders; do
    if [ "$force" = 0 ] && [ -d "$out/$kind" ] && [ -n "$(ls -A "$out/$kind")" ]; then
        echo "$out/$kind: already there (--force makes it again)"
        continue
    fi
    "$kiln" data make "$kind" "$out/$kind" "$@"
done
