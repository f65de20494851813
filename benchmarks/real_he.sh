#!/usr/bin/env bash
# DES-SAM on real tissue, on a CPU, as a new user runs it: a folder of tiles with hand-drawn nucleus
# outlines (DATA/images/NAME.png and DATA/labels/NAME.png, instance labels, 0 = background) is
# converted with `dessam convert --from labels`; DES-SAM is trained from the *boxes* of the first
# TRAIN_TILES tiles (sorted by name) with plain `dessam train --sam default` (its own CPU settings),
# and scored on the *masks* of the others with every baseline (`dessam eval --baselines`).
#
#   benchmarks/real_he.sh DATA [OUT]        # OUT defaults to real_he_output/
#   TRAIN_TILES=30 TRAIN_ARGS="--max-iters 20" benchmarks/real_he.sh DATA   # a quick check
#
# Writes OUT/real_he.md: the table, the commands and the time each step took.
set -euo pipefail
DATA=${1:?usage: benchmarks/real_he.sh DATA [OUT]}
OUT=${2:-real_he_output}
TRAIN_TILES=${TRAIN_TILES:-30}
DESSAM=${DESSAM:-dessam}
command -v "$DESSAM" > /dev/null || DESSAM="$(dirname "$0")/../.venv/bin/dessam"
[ -d "$DATA/images" ] && [ -d "$DATA/labels" ] || { echo "$DATA: needs images/ and labels/ folders" >&2; exit 2; }

rm -rf "$OUT/train" "$OUT/test" && mkdir -p "$OUT"/{train,test}/{images,labels}
i=0
for image in $(ls "$DATA/images" | sort); do
    split=test; [ "$i" -lt "$TRAIN_TILES" ] && split=train
    ln -s "$(realpath "$DATA/images/$image")" "$OUT/$split/images/$image"
    ln -s "$(realpath "$DATA/labels/$image")" "$OUT/$split/labels/$image"
    i=$((i + 1))
done

stamp() { date +%s; }
t0=$(stamp)
"$DESSAM" convert --from labels "$OUT/train/labels" --images "$OUT/train/images" --out "$OUT/train.json"
"$DESSAM" convert --from labels "$OUT/test/labels" --images "$OUT/test/images" --out "$OUT/test.json"
t1=$(stamp)
# shellcheck disable=SC2086
"$DESSAM" train --train "$OUT/train.json" --images "$OUT/train/images" --sam default --out "$OUT/run" --quiet ${TRAIN_ARGS:-}
t2=$(stamp)
"$DESSAM" eval --model "$OUT/run/model.pt" --data "$OUT/test.json" --images "$OUT/test/images" \
    --out "$OUT/report" --baselines --quiet > /dev/null
t3=$(stamp)

{
    echo "# DES-SAM on real tissue ($(date -u +%Y-%m-%d), $(nproc) CPU cores)"
    echo
    echo "Data: \`$DATA\`, $(ls "$OUT/train/images" | wc -l) tiles for training (boxes only), $(ls "$OUT/test/images" | wc -l) for testing (masks)."
    echo
    echo "    dessam train --train train.json --images train/images --sam default --out run ${TRAIN_ARGS:-}"
    echo "    dessam eval --model run/model.pt --data test.json --images test/images --out report --baselines"
    echo
    echo "Time: convert $((t1 - t0)) s, train $((t2 - t1)) s, eval $((t3 - t2)) s."
    echo
    cat "$OUT/report/metrics.md"
} > "$OUT/real_he.md"
cat "$OUT/real_he.md"
