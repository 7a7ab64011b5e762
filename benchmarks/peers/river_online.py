"""River's online learners, test-then-train on a stream file, for the loop benchmark: the
Adaptive Random Forest (`arf`) or the Hoeffding Adaptive Tree (`hat`), with their defaults.

Runs in .venv-peers/river (no ctloop imports). Input: JSON lines of `{"features": {...},
"label": y}` in stream order. Each record is predicted first; its label is learned
`--label-delay` records later, as ctloop receives it. The first `--warmup` records are
learned at once (ctloop's cold start gets them labelled too). Output: one line per streamed
record after the warm-up, 1 if the prediction was right, else 0.

    python river_online.py STREAM.jsonl --model arf --warmup 1200 --label-delay 50 --seed 7
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("stream")
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--label-delay", type=int, required=True)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--model", choices=("arf", "hat"), default="arf")
    args = parser.parse_args()
    # only in .venv-peers/river; importing this module needs no River
    from river import forest, tree

    if args.model == "arf":
        model = forest.ARFClassifier(seed=args.seed)
    else:
        model = tree.HoeffdingAdaptiveTreeClassifier(seed=args.seed)
    waiting: deque[tuple[dict, int]] = deque()
    out = []
    with open(args.stream) as lines:
        for i, line in enumerate(lines):
            item = json.loads(line)
            x, y = item["features"], item["label"]
            if i < args.warmup:
                model.learn_one(x, y)
                continue
            out.append("1" if model.predict_one(x) == y else "0")
            waiting.append((x, y))
            while len(waiting) > args.label_delay:
                model.learn_one(*waiting.popleft())
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
