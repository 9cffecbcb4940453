"""Hold whole photographers out of the parks data, as the app's real users are: build train/ and heldout/ folders.

    python experiments/leave_out.py --out out/leave-out               # the default held-out sources below
    P=../shared/data/parks S=../shared/data/intel-scenes/train
    python train.py --data-dir out/leave-out/train \\
        --negatives-dir $P/grand_canyon $P/glacier $P/acadia $P/great_smoky $S/street $S/buildings $S/sea \\
        --model-name-or-path ../shared/models/vit-small-dinov2 --output-dir out/leave-out-model
    H=out/leave-out/heldout T=../shared/data/intel-scenes/test
    parkclf abstain-eval --model out/leave-out-model --in-scope $H/sequoia $H/yellowstone $H/yosemite \\
        --out-of-scope zion=$P/zion arches=$P/arches street=$T/street buildings=$T/buildings

The held-out photos come from sources (``SOURCES.tsv``'s repo column) that train.py never sees; with Zion and
Arches left out of the negatives, those parks are never seen either. Files are symbolic links, nothing is copied.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARKS = ROOT.parent / "shared" / "data" / "parks"
HELD_OUT = ["bensarah/escapades", "poeschko/longwayhome", "lanyonm/lanyonm.github.io", "Witiko/witiko.github.io",
            "tcp13/travel-map"]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parks", default=str(PARKS))
    ap.add_argument("--classes", nargs="+", default=["sequoia", "yellowstone", "yosemite"])
    ap.add_argument("--sources", nargs="+", default=HELD_OUT, help="repo column values to hold out")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    parks, out = Path(a.parks).resolve(), Path(a.out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty; choose a new --out folder.")
    counts: dict[str, int] = {}
    with open(parks / "SOURCES.tsv", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["park"] not in a.classes:
                continue
            split = "heldout" if row["repo"] in a.sources else "train"
            dest = out / split / row["park"] / Path(row["file"]).name
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(parks / row["file"], dest)
            counts[f"{split}/{row['park']}"] = counts.get(f"{split}/{row['park']}", 0) + 1
    print(counts)
    return counts


if __name__ == "__main__":
    main()
