"""The app as ``python app.py`` serves it, with a stand-in for the Hub (hub_standin.py) keeping the corrections:

    FEEDBACK_DATASET=me/corrections python tests/hub_app.py HUB_FOLDER [parkclf serve flags]
"""

import sys

from parkclf.app import serve

from hub_standin import RecordingHfApi

if __name__ == "__main__":
    serve.main(sys.argv[2:], hf_api=RecordingHfApi(sys.argv[1]))
