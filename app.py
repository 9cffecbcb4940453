"""National Parks Classifier: the Gradio app (a Hugging Face Space's app.py). Same as ``parkclf serve``.

    python app.py                        # the embedded model in models/parks-vit-small
    MODEL_ID=user/model python app.py    # a Hub model repo, or a local train.py output folder
    python app.py --share                # plus a public gradio.live link (or GRADIO_SHARE=1)

Honours GRADIO_SERVER_NAME / GRADIO_SERVER_PORT; FEEDBACK_DIR (a folder) or FEEDBACK_DATASET (a Hub dataset repo,
with an HF_TOKEN secret) turns on "wrong? tell us".
"""

import sys
from pathlib import Path

# A Space runs app.py from a clone with only requirements.txt installed (no `pip install -e .`): find the package.
sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from parkclf.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
