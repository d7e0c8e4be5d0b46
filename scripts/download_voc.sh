#!/usr/bin/env bash
# Download Pascal VOC 2007 (trainval + test) and VOC 2012 (trainval) into <dest>/VOCdevkit (default
# dest: <repo>/data), the layout configs/data/voc.yaml expects:
#   <dest>/VOCdevkit/VOC2007/{Annotations,JPEGImages,ImageSets/Main}   (trainval + test)
#   <dest>/VOCdevkit/VOC2012/{Annotations,JPEGImages,ImageSets/Main}   (trainval)
# About 3.6 GB of downloads (tar files are deleted after extraction unless KEEP_ARCHIVES=1).
#
#   scripts/download_voc.sh [dest]
#   VOC_MIRROR=https://pjreddie.com/media/files scripts/download_voc.sh     # when the Oxford host is down
# Then: python scripts/check_dataset.py data=voc   and   python train.py data=voc
set -euo pipefail

DEST="${1:-$(cd "$(dirname "$0")/.." && pwd)/data}"
MIRROR="${VOC_MIRROR:-}"
FILES=(
  "voc2007/VOCtrainval_06-Nov-2007.tar"
  "voc2007/VOCtest_06-Nov-2007.tar"
  "voc2012/VOCtrainval_11-May-2012.tar"
)

fetch() {  # url output
  if command -v wget >/dev/null 2>&1; then wget -c -O "$2" "$1"; else curl -L -C - -o "$2" "$1"; fi
}

mkdir -p "$DEST"
cd "$DEST"
for file in "${FILES[@]}"; do
  name="$(basename "$file")"
  if [[ -n "$MIRROR" ]]; then url="$MIRROR/$name"; else url="http://host.robots.ox.ac.uk/pascal/VOC/$file"; fi
  echo "==> $url"
  fetch "$url" "$name"
  tar -xf "$name"            # every archive extracts into VOCdevkit/
  [[ "${KEEP_ARCHIVES:-0}" == 1 ]] || rm -f "$name"
done
echo "VOC is in $DEST/VOCdevkit:"
for year in VOC2007 VOC2012; do
  echo "  $year: $(ls "VOCdevkit/$year/JPEGImages" | wc -l) images"
done
