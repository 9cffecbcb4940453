"""National Parks Classifier: a Gradio app over a trained checkpoint.

    python app.py                        # the embedded model in models/parks-vit-small
    MODEL_ID=user/model python app.py    # a Hub model repo, or a local train.py output folder
    python app.py --share                # plus a public gradio.live link (or GRADIO_SHARE=1)

Honours GRADIO_SERVER_NAME / GRADIO_SERVER_PORT; FEEDBACK_DIR turns on "wrong? tell us".
"""

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "src"))

import logging  # noqa: E402

from parkclf.serve import create_demo, launch  # noqa: E402

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

EMBEDDED_MODEL = ROOT / "models" / "parks-vit-small"

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.environ.get("MODEL_ID") or str(EMBEDDED_MODEL),
                        help="Hub model id or local folder (default: $MODEL_ID, else the embedded model)")
    parser.add_argument("--share", action="store_true", default=os.environ.get("GRADIO_SHARE") == "1",
                        help="Also open a public share link (needs the network)")
    parser.add_argument("--feedback-dir", default=os.environ.get("FEEDBACK_DIR"),
                        help="Save user corrections here (off unless set)")
    args = parser.parse_args()
    demo = create_demo(args.model, examples_dir=ROOT / "examples", feedback_dir=args.feedback_dir)
    launch(demo, share=args.share, feedback_dir=args.feedback_dir)
