"""The app as ``python app.py`` serves it, with a disk that fills on demand: while the file FULL exists, writing an
upload into Gradio's temporary folder, or a correction into the feedback folder, fails as a full disk does (ENOSPC).

    FEEDBACK_DIR=... python tests/faulty_app.py FULL [parkclf serve flags]
"""

import errno
import os
import pathlib
import sys

from gradio.route_utils import GradioUploadFile

from parkclf.app import serve

FULL = pathlib.Path(sys.argv[1])


def disk_full() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


upload_write = GradioUploadFile.write


async def write_upload(self, data):
    if FULL.exists():
        raise disk_full()
    return await upload_write(self, data)


write_bytes = pathlib.Path.write_bytes


def write_file(self, data):
    if FULL.exists() and str(self).startswith(os.environ.get("FEEDBACK_DIR") or "\0"):
        raise disk_full()
    return write_bytes(self, data)


GradioUploadFile.write, pathlib.Path.write_bytes = write_upload, write_file

if __name__ == "__main__":
    serve.main(sys.argv[2:])
