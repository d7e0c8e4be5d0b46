#!/usr/bin/env bash
# Download MS COCO 2017 detection into <dest>/coco (default dest: <repo>/data), the layout
# configs/data/coco.yaml expects:
#   <dest>/coco/train2017/*.jpg   (118k images, 18 GB)
#   <dest>/coco/val2017/*.jpg     (5k images, 1 GB)
#   <dest>/coco/annotations/instances_{train,val}2017.json
# Zips are deleted after extraction unless KEEP_ARCHIVES=1. Needs `unzip`.
#
#   scripts/download_coco.sh [dest] [--val-only]     (--val-only: val2017 + annotations, for evaluation)
# Then: python scripts/check_dataset.py data=coco   and   python train.py data=coco
set -euo pipefail

DEST="$(cd "$(dirname "$0")/.." && pwd)/data"
VAL_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --val-only) VAL_ONLY=1 ;;
    *) DEST="$arg" ;;
  esac
done
BASE="http://images.cocodataset.org"
FILES=("annotations/annotations_trainval2017.zip" "zips/val2017.zip")
[[ "$VAL_ONLY" == 1 ]] || FILES+=("zips/train2017.zip")

fetch() {  # url output
  if command -v wget >/dev/null 2>&1; then wget -c -O "$2" "$1"; else curl -L -C - -o "$2" "$1"; fi
}

mkdir -p "$DEST/coco"
cd "$DEST/coco"
for file in "${FILES[@]}"; do
  name="$(basename "$file")"
  echo "==> $BASE/$file"
  fetch "$BASE/$file" "$name"
  unzip -q -o "$name"        # -> annotations/, val2017/, train2017/
  [[ "${KEEP_ARCHIVES:-0}" == 1 ]] || rm -f "$name"
done
echo "COCO 2017 is in $DEST/coco:"
for split in train2017 val2017; do
  if [[ -d "$split" ]]; then echo "  $split: $(ls "$split" | wc -l) images"; fi
done
ls annotations/instances_*2017.json
