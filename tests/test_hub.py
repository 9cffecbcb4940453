"""Publishing is tested up to the huggingface_hub call: nothing reaches the Hub from here."""


import pytest

from parkclf.errors import UsageError
from parkclf.publish import hub
from parkclf.training import main

TOKEN = "hf_TESTtokenThatMustNeverBePrinted0123456789"


class RecordingApi:
    """Stands in for HfApi at the network boundary and records what would have been sent."""

    calls: list = []

    def __init__(self, *a, **kw):  # the fixture empties `calls`: one list across every HfApi() of a test
        pass

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))

    def upload_folder(self, **kw):
        self.calls.append(("upload_folder", kw["repo_id"], kw))
        return "https://huggingface.co/" + kw["repo_id"]

    def add_space_variable(self, repo_id, key, value):
        self.calls.append(("add_space_variable", repo_id, {key: value}))

    def create_commit(self, **kw):
        self.calls.append(("create_commit", kw["repo_id"], kw))
        return "https://huggingface.co/spaces/" + kw["repo_id"]


@pytest.fixture
def api(monkeypatch):
    monkeypatch.setattr(hub, "HfApi", RecordingApi)
    RecordingApi.calls = []
    return RecordingApi


def test_push_to_hub_uploads_the_output_folder_once_and_never_prints_the_token(api, tiny_vit, imagefolder, tmp_path,
                                                                                monkeypatch, capsys, caplog):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    out = tmp_path / "out"
    main(["--data-dir", str(imagefolder), "--model-name-or-path", str(tiny_vit), "--output-dir", str(out),
          "--freeze-backbone", "--bf16", "false", "--no-export-onnx", "--push-to-hub",
          "--hub-model-id", "me/parks"])
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


def fake_site(tmp_path):
    """A web/ folder with the page and its runtime files, and a checkpoint with its int8 export."""
    from parkclf.publish import web

    site, model = tmp_path / "web", tmp_path / "model"
    for name in web.PAGE + web.RUNTIME:
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(name)
    for name in web.MODEL:
        (model / name).parent.mkdir(parents=True, exist_ok=True)
        (model / name).write_text(name)
    (model / "config.json").write_text('{"title": "Parks"}')
    return site, model


def test_the_in_browser_page_deploys_as_a_static_space_in_one_commit(api, tmp_path):
    from parkclf.publish import web

    site, model = fake_site(tmp_path)
    hub.deploy_static("me/parks-web", model, web_dir=site, title="Parks")
    (create, commit) = api.calls
    assert create[2]["repo_type"] == "space" and create[2]["space_sdk"] == "static"
    ops = {op.path_in_repo: op for op in commit[2]["operations"]}
    assert set(ops) == {*web.PAGE, *web.RUNTIME, *(f"model/{n}" for n in web.MODEL), "README.md"}
    card = ops["README.md"].path_or_fileobj
    assert b"sdk: static" in card and b"app_file: index.html" in card
    assert not [n for n in ops if n.startswith("node_modules/") and n not in web.RUNTIME]  # only what the page loads


def test_a_static_space_without_npm_packages_or_an_export_names_the_fix(api, tmp_path):
    site, model = fake_site(tmp_path)
    (model / "onnx" / "model_quantized.onnx").unlink()
    with pytest.raises(UsageError, match="parkclf export"):
        hub.deploy_static("me/parks-web", model, web_dir=site)
    import shutil

    shutil.rmtree(site / "node_modules")
    with pytest.raises(UsageError, match="npm ci"):
        hub.deploy_static("me/parks-web", model, web_dir=site)
    assert api.calls == []  # refused before anything reached the Hub


def test_deploying_both_points_the_app_at_the_static_page(api, tmp_path):
    from parkclf.publish import deploy

    site, model = fake_site(tmp_path)
    deploy.main(["--space", "me/app", "--static-space", "me/web", "--model-dir", str(model), "--web-dir", str(site),
                 "--root", str(tmp_path)])
    kinds = [c[0] for c in api.calls]
    assert kinds == ["create_repo", "create_commit", "create_repo", "add_space_variable", "upload_folder"]
    assert api.calls[3][2] == {"WEB_URL": "https://huggingface.co/spaces/me/web"}
