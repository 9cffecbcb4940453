"""Fine-tune an image classifier on a folder of photos (one sub-folder per class): ``parkclf train``, as a script.

    python train.py --data-dir ../shared/data/intel-scenes/train \
        --model-name-or-path ../shared/models/vit-small-dinov2 --output-dir out/scenes

`python train.py --help` lists every option; a JSON file of them works too: `python train.py args.json`.
"""

import sys
from pathlib import Path

# A Space (or a fresh clone) runs this file without `pip install -e .`: find the package beside it.
sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from parkclf.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
