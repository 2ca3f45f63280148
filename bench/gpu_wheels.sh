#!/usr/bin/env bash
# Download the wheels bench/gpu_check.sh needs on the bare GPU image (Python 3.12, x86-64, no
# network there) into a git-ignored folder of the repository (default .whl), so that the device
# tool can carry it:  bash bench/gpu_wheels.sh [DIR]
# Exactly the pins of bench/gpu_wheels.txt and bench/gpu_wheels_pytest.txt, without their
# dependencies (those are on the image, see bench/gpu_wheels.txt), built for CPython 3.12; and a
# copy of the embedded mini corpus (DIR/mini_corpus, about 28 MB), which the recipes step of
# bench/gpu_check.sh runs every recipe on (the GPU image cannot synthesise it: no espeak-ng).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
dest="${1:-$repo/.whl}"
mkdir -p "$dest"
python="${PYTHON:-python3}"
for requirements in "$repo/bench/gpu_wheels.txt" "$repo/bench/gpu_wheels_pytest.txt"; do
  "$python" -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any \
    -d "$dest" -r "$requirements"
done
echo "Wheels in $dest:"
total=0
while read -r name; do
  file="$(ls "$dest" | grep -i "^$(echo "${name%%==*}" | tr '.-' '__')-${name##*==}-" | head -1)"
  if [ -z "$file" ]; then
    echo "  MISSING: $name" >&2
    exit 1
  fi
  size=$(stat -c %s "$dest/$file")
  total=$(( total + size ))
  printf '  %-60s %8d KiB\n' "$file" $(( size / 1024 ))
done < <(grep -h -v '^\s*#' "$repo/bench/gpu_wheels.txt" "$repo/bench/gpu_wheels_pytest.txt" | grep .)
mini="$(cd "$repo" && PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" "$python" -c \
  'from lasersb.data.mini import get_mini_corpus; print(get_mini_corpus())')"
rm -rf "$dest/mini_corpus"
cp -a "$mini" "$dest/mini_corpus"
corpus_kib=$(du -sk "$dest/mini_corpus" | cut -f1)
printf '  %-60s %8d KiB\n' "mini_corpus/ (a copy of $(basename "$mini"))" "$corpus_kib"
echo "  total $(( total / 1024 + corpus_kib )) KiB (the device tool carries at most 64 MiB)"
