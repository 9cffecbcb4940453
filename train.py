"""Fine-tune an image classifier on a folder of photos (one sub-folder per class).

    python train.py --data-dir ../shared/data/intel-scenes/train \
        --model-name-or-path ../shared/models/vit-small-dinov2 --output-dir out/scenes

`python train.py --help` lists every option; a JSON file of them works too: `python train.py args.json`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "src"))

from parkclf.training import main  # noqa: E402

if __name__ == "__main__":
    main()
