"""Publishing is tested up to the huggingface_hub call: nothing reaches the Hub from here."""


import pytest

from parkclf.errors import UsageError
from parkclf.publish import hub
from parkclf.training import main

TOKEN = "hf_TESTtokenThatMustNeverBePrinted0123456789"


class RecordingApi:
    """Stands in for HfApi at the network boundary and records what would have been sent."""

    calls: list = []

    def __init__(self, *a, **kw):
        RecordingApi.calls = []

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))

    def upload_folder(self, **kw):
        self.calls.append(("upload_folder", kw["repo_id"], kw))
        return "https://huggingface.co/" + kw["repo_id"]

    def add_space_variable(self, repo_id, key, value):
        self.calls.append(("add_space_variable", repo_id, {key: value}))


@pytest.fixture
def api(monkeypatch):
    monkeypatch.setattr(hub, "HfApi", RecordingApi)
    return RecordingApi


def test_push_to_hub_uploads_the_output_folder_once_and_never_prints_the_token(api, tiny_vit, imagefolder, tmp_path,
                                                                                monkeypatch, capsys, caplog):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    out = tmp_path / "out"
    main(["--data-dir", str(imagefolder), "--model-name-or-path", str(tiny_vit), "--output-dir", str(out),
          "--freeze-backbone", "--head-epochs", "3", "--bf16", "false", "--no-export-onnx", "--push-to-hub", "--hub-model-id", "me/parks"])
    kinds = [c[0] for c in api.calls]
    assert kinds == ["create_repo", "upload_folder"]
    upload = api.calls[1][2]
    assert upload["folder_path"] == str(out) and upload["repo_type"] == "model"
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err + caplog.text
    for f in out.rglob("*"):
        if f.is_file():
            assert TOKEN.encode() not in f.read_bytes(), f


def test_push_without_repo_id_names_the_fix(tiny_vit, imagefolder, tmp_path):
    with pytest.raises(UsageError, match="--hub-model-id"):
        main(["--data-dir", str(imagefolder), "--model-name-or-path", str(tiny_vit), "--output-dir", str(tmp_path),
              "--push-to-hub"])


def test_deploy_space_creates_a_gradio_space_and_points_it_at_the_model(api, tmp_path):
    hub.deploy_space("me/parks-app", model_id="me/parks", root=tmp_path)
    create, var, upload = api.calls
    assert create[0] == "create_repo" and create[2]["repo_type"] == "space" and create[2]["space_sdk"] == "gradio"
    assert create[2]["exist_ok"] is True
    assert var == ("add_space_variable", "me/parks-app", {"MODEL_ID": "me/parks"})
    assert upload[2]["repo_type"] == "space" and "app.py" in upload[2]["allow_patterns"]


def test_deploy_cli(api, monkeypatch, tmp_path):
    from parkclf.publish import deploy

    deploy.main(["--space", "me/app", "--model-id", "me/m", "--root", str(tmp_path)])
    assert [c[0] for c in api.calls] == ["create_repo", "add_space_variable", "upload_folder"]
