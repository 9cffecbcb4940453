"""A process that keeps corrections as the app does (FeedbackStore on a CommitScheduler), driven line by line on
stdin, so a test can kill it at a moment of its choosing. The Hub is the recording stand-in (hub_standin.py).

    python tests/feedback_proc.py HUB_FOLDER FEEDBACK_DIR
    stdin:  correct PHOTO LABEL   -> "saved SHA256" or "refused SENTENCE"
            close                 -> "closed" (the upload at shutdown)
"""

import sys

from parkclf.app.feedback import FeedbackError, digest, on_hub

from hub_standin import RecordingHfApi

ANSWER = {"label": "blue", "confidences": {"red": 0.25, "blue": 0.7}, "abstained": False}

if __name__ == "__main__":
    hub, folder = sys.argv[1:3]
    store = on_hub("me/corrections", folder, ["blue", "red"], every=0.01, api=RecordingHfApi(hub))  # every 0.6 s
    print("ready", store.run.name, flush=True)
    for line in sys.stdin:
        command, *args = line.split()
        if command == "correct":
            photo, label = args
            store.remember("s1", digest(photo), ANSWER)
            try:
                store.save(photo, label, session="s1")
                print("saved", digest(photo), flush=True)
            except FeedbackError as e:
                print("refused", e, flush=True)
        elif command == "close":
            store.close()
            print("closed", flush=True)
